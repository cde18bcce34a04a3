package httpguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Breaker judges whether the provider is up, by what it answered; a
// Classifier above judges whether an answer is worth another attempt. A
// 2xx is an answer, produced and billed: a Classifier of the caller's that
// retries it (an error in a 200's body, x-should-retry: true on it) does
// not make it a failure of the circuit, as a retried 408 or 409 is none.
// DefaultClassifier never retries a 2xx, so that in the recommended stack
// the Retrier discards none.
func TestBreakerCountsA2xxThatAClassifierRetriesAsAnAnswer(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.Header().Set("X-Should-Retry", "true")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"error":{"message":"overloaded"}}`)
	}))
	t.Cleanup(srv.Close)
	for _, custom := range []bool{false, true} {
		attempts.Store(0)
		p := DefaultRetryPolicy()
		p.MaxRetries, p.BaseDelay, p.Jitter = 3, time.Millisecond, 0
		if custom {
			p.Classify = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
				if resp != nil && resp.Header.Get("X-Should-Retry") == "true" {
					return true, ErrServerSaidRetry
				}
				return DefaultClassifier(ctx, resp, err)
			}
		}
		r, err := NewRetrier(p)
		require.NoError(t, err)
		b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 2})
		require.NoError(t, err)
		base := srv.Client().Transport.(*http.Transport).Clone()
		t.Cleanup(base.CloseIdleConnections)
		c := &http.Client{Transport: Chain(base, r, b)}
		for range 3 {
			resp, err := c.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		want := 3
		if custom {
			want = 12
		}
		assert.EqualValues(t, want, attempts.Load(), "custom Classifier %v", custom)
		s := b.Stats()
		require.Len(t, s, 1)
		assert.Equal(t, CircuitClosed, s[0].State, "custom Classifier %v", custom)
		assert.Equal(t, want, s[0].Calls)
		assert.Zero(t, s[0].Failures)
	}
}
