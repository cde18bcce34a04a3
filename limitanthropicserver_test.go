package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holysheep/httpguard/httpguardtest"
)

// The fault server's rate limit answers /v1/messages in Anthropic's terms
// (anthropic-ratelimit-requests-*, the reset an RFC 3339 time): a Limiter
// that follows them spaces the requests so that none is refused.
func TestLimiterFollowsTheFaultServersAnthropicRateLimit(t *testing.T) {
	const rps = 25 // a request every 40 ms, one at a time
	srv, err := httpguardtest.NewServer(httpguardtest.Config{RequestsPerSecond: rps, Burst: 1})
	require.NoError(t, err)
	defer srv.Close()
	l, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: Chain(base, l)}

	const n = 5
	start := time.Now()
	for i := range n {
		resp, err := client.Post(srv.URL+"/v1/messages", "application/json",
			strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "request %d", i)
		require.Equal(t, "0", resp.Header.Get("Anthropic-Ratelimit-Requests-Remaining"))
		require.Empty(t, resp.Header.Get("X-Ratelimit-Remaining-Requests"), "Anthropic's terms only")
	}
	st := srv.Stats()
	assert.Zero(t, st.RateLimited)
	assert.GreaterOrEqual(t, time.Since(start), (n-1)*time.Second/rps-5*time.Millisecond, "paused until each reset")
}
