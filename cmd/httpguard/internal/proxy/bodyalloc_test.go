package proxy

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// Was a bug: the proxy made room for a request body by its Content-Length
// before a byte of it came. A client declaring the 4 MiB MaxRequestBytes
// allows and sending nothing (a few hundred bytes of headers) held 4 MiB of
// the proxy's memory for the whole BodyReadTimeout, on each connection it
// opened: a thousand connections, 4 GB. The room now grows as bytes come.
func TestABodyDeclaredLargeButNotSentTakesNoMemoryAhead(t *testing.T) {
	p, err := New(Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, "http://upstream.test/v1")}}})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	var before, atFirstRead runtime.MemStats
	read := false
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = DefaultMaxRequestBytes
	req.Body = io.NopCloser(readFunc(func([]byte) (int, error) {
		if !read {
			read = true
			runtime.ReadMemStats(&atFirstRead)
		}
		return 0, errors.New("the client stalled, then went away")
	}))
	w := httptest.NewRecorder()
	runtime.ReadMemStats(&before)
	p.ServeHTTP(w, req)
	require.True(t, read)
	assert.Equal(t, http.StatusBadRequest, w.Code)
	assert.Less(t, atFirstRead.TotalAlloc-before.TotalAlloc, uint64(256<<10), "allocated before any byte of the body came")
}
