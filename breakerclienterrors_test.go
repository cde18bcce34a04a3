package httpguard

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deadModelServer answers 503 to every request but those marked X-Bad,
// which its edge refuses with 400 before any model runs, as a provider
// whose model servers are down still checks the requests it gets. It
// counts the requests that reached the dead model.
func deadModelServer(t *testing.T) (*server, *atomic.Int64) {
	var dead atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		if r.Header.Get("X-Bad") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		dead.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	return srv, &dead
}

// callBad sends a request the server refuses with 400.
func callBad(t *testing.T, c *http.Client, base string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)
	req.Header.Set("X-Bad", "1")
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
}

// A caller sending bad requests to a model that is down (a gateway's
// tenant looping on a 400) kept its circuit closed: each 400 counted as a
// success, ending the run of failures and thinning out the failure ratio,
// so that every attempt of every other call went to the dead model (1200
// for 300 calls, at 8 bad requests a call). A caller's error says nothing
// of the provider.
func TestBreakerOpensOnADeadModelWhateverBadRequestsComeBetween(t *testing.T) {
	srv, dead := deadModelServer(t)
	retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	r := newBreakerRig(t, BreakerConfig{})
	c := clientFor(t, retrier, r.b)

	for range 100 {
		for range 8 {
			callBad(t, c, srv.URL)
		}
		callChatURL(c, srv.URL)
		r.clock.Advance(100 * time.Millisecond)
	}

	assert.Equal(t, []string{"closed→open"}, r.transitions())
	assert.EqualValues(t, DefaultConsecutiveFailures, dead.Load(), "the first call's 4 attempts, the second's first: then the circuit is open")
}

// Nor does a bad request pass as a probe: three 400s do not close a
// half-open circuit in front of a model that is down; each gives its slot
// to the next request.
func TestBreakerHalfOpenIsNotClosedByBadRequests(t *testing.T) {
	srv, dead := deadModelServer(t)
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 3})
	c := clientFor(t, r.b)
	callChatURL(c, srv.URL)
	require.Equal(t, CircuitOpen, r.stats(t).State)
	r.clock.Advance(time.Minute)

	for range 6 {
		callBad(t, c, srv.URL)
	}
	assert.Equal(t, CircuitHalfOpen, r.stats(t).State, "400s are no probes' successes")
	for range 3 {
		code, err := callChatURL(c, srv.URL)
		require.NoError(t, err, "the 400s hold no slot")
		require.Equal(t, http.StatusServiceUnavailable, code)
	}

	assert.Equal(t, CircuitOpen, r.stats(t).State, "3 probes failed")
	assert.EqualValues(t, 4, dead.Load())
	assert.Equal(t, []string{"closed→open", "open→half-open", "half-open→open"}, r.transitions())
}
