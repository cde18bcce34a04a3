package httpguardtest

import (
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRequestsKeepAtMostOneMiBOfEachBody sends 2 bodies of 2 MiB to a
// server that keeps the latest 2 requests: Requests holds 1 MiB of each,
// and so must the server's memory, not the whole body read to bill it
// (up to 16 MiB each).
func TestRequestsKeepAtMostOneMiBOfEachBody(t *testing.T) {
	s, err := NewServer(Config{History: 2})
	require.NoError(t, err)
	body := `{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"` +
		strings.Repeat("a", 2*maxRequestBody) + `"}]}`
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for range 2 {
		resp, err := post(t, s, "/v1/chat/completions", body)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	s.Close() // its handlers, which hold the bodies they read, have returned
	kept := int64(heap()) - int64(before)
	runtime.KeepAlive(body) // in before, so in after too

	for _, r := range s.Requests() {
		assert.Len(t, r.Body, maxRequestBody)
	}
	assert.Less(t, kept, int64(3*maxRequestBody), "bytes the server keeps for 2 requests of 1 MiB each")
}
