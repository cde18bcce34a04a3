package httpguard

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holysheep/httpguard/httpguardtest"
)

// A primary that answers 429 with a long Retry-After is given up on: the
// call that got the 429 goes to the next target. The Limiter remembers the
// 429 as a pause of the primary's key, and the calls that come during it
// are refused unsent (ErrRateLimited, the turn too far away). Those calls
// are the same 429 remembered: they must go to the next target too, not
// fail while it is healthy.
func TestFallbackMovesCallsTheLimiterRefusesForAPrimaryPausedBy429(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.RateLimited(2*time.Minute)))
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second))
	retrier, _ := newTestRetrier(t, DefaultRetryPolicy())
	br := newBreakerRig(t, BreakerConfig{})
	budget := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar,
		Prices: PriceTable{"m": testPrices["m"], "small": testPrices["m"]}})
	limiter, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	c := clientFor(t, r.f, retrier, br.b, budget, limiter)

	for call := 1; call <= 3; call++ {
		resp := sendChat(t, c, primary, chatBody("m", 16))
		_, err := io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "call %d", call)
		assert.Equal(t, "second", resp.Header.Get(TargetHeader), "call %d", call)
	}
	assert.EqualValues(t, 1, primary.Stats().Requests, "the paused primary was sent only the first call")
	assert.EqualValues(t, 3, second.Stats().Requests)
	assert.Len(t, r.switches(), 3)
}

// The attempt whose failure opens its circuit ends its call's retries at
// once, whether the failure was an answer (a 503) or a connection reset:
// a retry would wait its backoff only for the open circuit to refuse it,
// and with a Fallback above the call moves that much later.
func TestBreakerEndsRetriesAtOnceWhenAConnectionFailureOpensTheCircuit(t *testing.T) {
	for name, fault := range map[string]httpguardtest.Fault{
		"503":   httpguardtest.ServiceUnavailable(),
		"reset": httpguardtest.ConnectionReset(),
	} {
		t.Run(name, func(t *testing.T) {
			primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
			require.NoError(t, primary.StartOutage(fault))
			r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second))
			retrier, slept := newTestRetrier(t, DefaultRetryPolicy())
			br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 2})
			c := clientFor(t, r.f, retrier, br.b)

			resp := sendChat(t, c, primary, chatBody("m", 16))
			_, err := io.Copy(io.Discard, resp.Body)
			require.NoError(t, err)

			assert.Equal(t, "second", resp.Header.Get(TargetHeader))
			assert.EqualValues(t, 2, primary.Stats().Requests, "the two failures that opened the circuit")
			assert.Len(t, slept.all(), 1, "one backoff, between the two failures; none for a retry the open circuit refuses")
		})
	}
}

// A primary that answers 429 without a wait (a rate limit that names no
// reset) is given up on, call after call; its Limiter lowers
// the key's rate on each 429, until the calls after cannot have a turn in
// time and are refused unsent. They are the same 429s remembered, and
// must go to the next target as the calls that got them did.
func TestFallbackMovesCallsTheLimiterRefusesAtARateLoweredBy429s(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.Fault{Status: http.StatusTooManyRequests, Code: "rate_limit_exceeded"}))
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second))
	retrier, _ := newTestRetrier(t, RetryPolicy{}) // no retries: each call moves after its 429
	br := newBreakerRig(t, BreakerConfig{})
	clk := newFakeClock(moveOn)
	limiter := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, MaxWait: 500 * time.Millisecond}, clk)
	c := clientFor(t, r.f, retrier, br.b, limiter)

	for call := 1; call <= 20; call++ {
		resp := sendChat(t, c, primary, chatBody("m", 16))
		_, err := io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		assert.Equal(t, "second", resp.Header.Get(TargetHeader), "call %d", call)
	}
	assert.EqualValues(t, 20, second.Stats().Requests)
}

// A spent quota is a 429 that says nothing of the rate (insufficient_quota:
// retrying cannot help until someone pays). The Limiter must not take it
// for a rate limit: lowering the key's rate on each would soon refuse the
// caller's calls with ErrRateLimited, hiding the provider's answer that
// says what is wrong.
func TestLimiterDoesNotSlowDownForASpentQuota(t *testing.T) {
	// Each quota 429 must be read as one: on a loaded machine (CI, -race)
	// the 20 ms peek can pass before the body is read, and the Limiter then
	// rightly takes the 429 for a rate limit's.
	defer func(d time.Duration) { maxPeekTime = d }(maxPeekTime)
	maxPeekTime = 5 * time.Second
	srv := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.StartOutage(httpguardtest.QuotaExceeded()))
	retrier, _ := newTestRetrier(t, DefaultRetryPolicy())
	clk := newFakeClock(moveOn)
	limiter := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, MaxWait: 500 * time.Millisecond}, clk)
	c := clientFor(t, retrier, limiter)

	for call := 1; call <= 20; call++ {
		status, err := callChat(c, srv, "m")
		require.NoError(t, err, "call %d", call)
		assert.Equal(t, http.StatusTooManyRequests, status)
	}
	assert.Zero(t, limiter.Stats().SlowDowns)
}
