package httpguard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Breaker counted an attempt the caller ended as the provider's failure
// when the caller's cause held ErrAttemptTimeout (errgroup's first error:
// a sibling's attempt that timed out): a fan-out of calls opened a circuit
// on one slow sibling.
func TestABreakerDoesNotCountACallersCauseHoldingAnAttemptTimeout(t *testing.T) {
	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer api.Close()
	defer close(release)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	br, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 2})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, br)}

	sibling := fmt.Errorf("post: %w", &RetryError{Attempts: 1, Err: fmt.Errorf("%w (%v)", ErrAttemptTimeout, time.Second)})
	for range 3 {
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			<-arrived
			cancel(sibling)
		}()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
		require.NoError(t, err)
		_, err = client.Do(req)
		cancel(nil)
		require.ErrorIs(t, err, sibling)
		require.NotErrorIs(t, err, ErrCircuitOpen, "the callers' own ends opened the circuit")
	}
}
