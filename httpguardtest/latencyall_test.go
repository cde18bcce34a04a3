package httpguardtest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: Latency is "added before every answer, faulty or not", but
// the 404 of an unknown path and the 405 of a method other than POST were
// answered at once: a client's timeout tested against them never fired.
func TestLatencyDelaysTheAnswersToUnknownPathsAndMethods(t *testing.T) {
	s := start(t, Config{Latency: time.Hour})
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/nope"},
		{http.MethodGet, "/v1/chat/completions"},
		{http.MethodGet, "/v1/messages"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		req, err := http.NewRequestWithContext(ctx, c.method, s.URL+c.path, strings.NewReader(chatBody))
		require.NoError(t, err)
		resp, err := s.Client().Do(req)
		cancel()
		if resp != nil {
			resp.Body.Close()
		}
		assert.ErrorIs(t, err, context.DeadlineExceeded, "%s %s answered before Latency", c.method, c.path)
	}
}

func TestLatencyDelaysA404ThenAnswersIt(t *testing.T) {
	s := start(t, Config{Latency: 30 * time.Millisecond})
	start := time.Now()
	code, _, _ := do(t, s, "/v1/nope", chatBody)
	assert.Equal(t, http.StatusNotFound, code)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
	assert.Equal(t, int64(1), s.Stats().Status[http.StatusNotFound])
}
