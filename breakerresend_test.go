package httpguard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Breaker used without a Retrier above it sent each call to a provider
// that resets every HTTP/2 stream with PROTOCOL_ERROR, and net/http sent
// it again on its own, at once and without end, until the caller's
// deadline: thousands of requests a call, each call's end the caller's
// own, which says nothing of the provider, so the circuit never opened.
// The Breaker now sends each request down as a Retrier sends an attempt:
// net/http's resend fails it, a failure of the provider, and after
// ConsecutiveFailures calls the circuit opens and refuses at once.
func TestBreakerOpensOnAProviderResettingEveryStream(t *testing.T) {
	s := newH2Resetter(t, 1, 1_000_000, "", func([]byte) Money { return 0 }, "{}")
	b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 3})
	require.NoError(t, err)
	tr := h2cTransport(t)
	closeDialedConns(t, tr)
	client := &http.Client{Transport: Chain(tr, b)}
	var errs []error
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(writeOnceBody))
		require.NoError(t, err)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		assert.NoError(t, ctx.Err(), "the call ended before the caller's deadline")
		cancel()
		errs = append(errs, err)
	}
	t.Logf("the server got %d requests; errors %v", s.reads.Load(), errs)
	for i, err := range errs {
		require.Error(t, err)
		assert.Equal(t, i >= 3, errors.Is(err, ErrCircuitOpen), "call %d: %v", i, err)
	}
	assert.Equal(t, int64(3), s.reads.Load())
}
