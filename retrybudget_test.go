package httpguard

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// outageServer answers 503 while down is set, 200 otherwise.
func outageServer(t *testing.T, down *atomic.Bool) *server {
	return newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		if down.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	})
}

func sendN(t *testing.T, c *http.Client, url string, n int) (ok int) {
	t.Helper()
	for i := 0; i < n; i++ {
		resp, err := c.Get(url)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok++
		}
	}
	return ok
}

func TestRetryBudgetHoldsAmplificationDuringAnOutage(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	p := DefaultRetryPolicy()
	p.MaxRetries = 3
	r, _ := newTestRetrier(t, p)
	const n = 1000
	sendN(t, clientFor(t, r), s.URL, n)
	amplification := float64(s.hits.Load()) / n
	t.Logf("server saw %d requests for %d logical requests: %.3f×", s.hits.Load(), n, amplification)
	assert.LessOrEqual(t, amplification, 1.1)
}

func TestLoneRequestOnAFreshRetrierGetsAllItsRetries(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	sendN(t, clientFor(t, r), s.URL, 1)
	assert.EqualValues(t, 6, s.hits.Load())
	assert.Len(t, sl.all(), 5)
}

// faultyTransport answers 503 to a seeded random share of requests, in
// arrival order, and 200 to the others, in memory: the network plays no part
// in what the budget decides (bench/ measures the same over loopback).
func faultyTransport(rate float64, seed uint64) (http.RoundTripper, *atomic.Int64) {
	rng := rand.New(rand.NewPCG(seed, seed))
	var hits atomic.Int64
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		hits.Add(1)
		status := 200
		if rng.Float64() < rate {
			status = 503
		}
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	}), &hits
}

// At up to 20% random faults, the budget never stands in the way: the
// Retrier sends exactly what it would send without a budget, and serves
// every call that 3 retries can save.
func TestRetryBudgetKeepsEveryRetryOfADegradedProvider(t *testing.T) {
	const calls = 3000
	for _, rate := range []float64{0.05, 0.1, 0.15, 0.2} {
		var hits [2]int64
		var served [2]int
		for i, disabled := range []bool{false, true} {
			base, n := faultyTransport(rate, 2026)
			p := DefaultRetryPolicy()
			p.MaxRetries = 3
			p.RetryBudget.Disabled = disabled
			r, _ := newTestRetrier(t, p)
			rt := r.Wrap(base)
			for range calls {
				resp, err := rt.RoundTrip(httptest.NewRequest("GET", "http://api.test/", nil))
				require.NoError(t, err)
				if resp.StatusCode == 200 {
					served[i]++
				}
			}
			hits[i] = n.Load()
		}
		assert.Equal(t, hits[1], hits[0], "%.0f%% faults: requests with and without a budget", 100*rate)
		assert.Equal(t, served[1], served[0], "%.0f%% faults: served with and without a budget", 100*rate)
		assert.GreaterOrEqual(t, float64(served[0])/calls, 0.995, "%.0f%% faults", 100*rate)
	}
}

func TestRetriesRecoverWhenTheOutageEnds(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	c := clientFor(t, r)
	sendN(t, c, s.URL, 100)
	require.Less(t, r.budget.tokens.Load(), int64(unit), "the outage spent the budget")

	down.Store(false)
	sendN(t, c, s.URL, 15)
	assert.GreaterOrEqual(t, r.budget.tokens.Load(), int64(5*unit), "fifteen successes earned five retries")

	// A transient failure gets all its retries again.
	down.Store(true)
	before := s.hits.Load()
	sendN(t, c, s.URL, 1)
	assert.EqualValues(t, 6, s.hits.Load()-before)
}

func TestDisabledRetryBudgetRetriesEverything(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	p := DefaultRetryPolicy()
	p.MaxRetries = 3
	p.RetryBudget.Disabled = true
	r, _ := newTestRetrier(t, p)
	sendN(t, clientFor(t, r), s.URL, 50)
	assert.EqualValues(t, 200, s.hits.Load())
}

func TestRefusalsNeitherSpendNorEarnRetries(t *testing.T) {
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	r.budget.tokens.Store(3 * unit)
	r.budget.success.Store(unit / 2)
	refuse := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, Refuse(errors.New("no"))
	})
	for range 100 {
		_, err := r.Wrap(refuse).RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
		require.True(t, IsRefusal(err))
	}
	assert.EqualValues(t, 3*unit, r.budget.tokens.Load())
	assert.EqualValues(t, unit/2, r.budget.success.Load())
}

func TestCallerCancellationSaysNothingOfTheServer(t *testing.T) {
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cancelled := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, context.Canceled })
	req := httptest.NewRequest("GET", "http://x/", nil).WithContext(ctx)
	_, err := r.Wrap(cancelled).RoundTrip(req)
	require.ErrorIs(t, err, context.Canceled)
	assert.EqualValues(t, unit, r.budget.success.Load())
}

func TestRetryBudgetSuccessRateReachesItsBoundsExactly(t *testing.T) {
	b := newRetryBudget(RetryBudget{}.withDefaults())
	for range 20 * successWindow {
		b.record(false)
	}
	assert.Zero(t, b.success.Load())
	for range 20 * successWindow {
		b.record(true)
	}
	assert.EqualValues(t, unit, b.success.Load())
}

func TestRetryBudgetSuccessRateWeighsTheLastTenAttempts(t *testing.T) {
	b := newRetryBudget(RetryBudget{}.withDefaults())
	for range 10 {
		b.record(false)
	}
	// (1 - 1/10)^10 ≈ 0.349, to within the rounding up of each step.
	assert.InDelta(t, 0.349, float64(b.success.Load())/unit, 0.001)
}

func TestRetryBudgetEarnsInProportionToTheSuccessRate(t *testing.T) {
	b := newRetryBudget(RetryBudget{MaxRatio: 2, MinRatio: 0.1, Burst: 5}.withDefaults())
	assert.EqualValues(t, 5*unit, b.tokens.Load(), "a fresh budget is full")

	b.tokens.Store(0)
	b.success.Store(unit / 4)
	b.earn()
	assert.EqualValues(t, unit/2, b.tokens.Load(), "MaxRatio·s")

	b.tokens.Store(0)
	b.success.Store(0)
	b.earn()
	assert.EqualValues(t, unit/10, b.tokens.Load(), "never less than MinRatio")

	b.success.Store(unit)
	for range 10 {
		b.earn()
	}
	assert.EqualValues(t, 5*unit, b.tokens.Load(), "never more than Burst")
}

func TestRetryBudgetTakeSpendsWholeRetries(t *testing.T) {
	b := newRetryBudget(RetryBudget{Burst: 2}.withDefaults())
	assert.True(t, b.take())
	assert.True(t, b.take())
	assert.False(t, b.take())
	b.add(unit - 1)
	assert.False(t, b.take(), "a retry is spent whole")
	b.refund()
	assert.True(t, b.take())
	var none *retryBudget
	assert.True(t, none.take(), "a disabled budget allows every retry")
	none.record(false)
	none.earn()
	none.refund()
}

func TestRetryBudgetStaysWithinBoundsUnderConcurrency(t *testing.T) {
	b := newRetryBudget(RetryBudget{Burst: 3}.withDefaults())
	var taken atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				b.record((i+g)%3 != 0)
				b.earn()
				if b.take() {
					taken.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	assert.GreaterOrEqual(t, b.tokens.Load(), int64(0))
	assert.LessOrEqual(t, b.tokens.Load(), int64(3*unit))
	assert.GreaterOrEqual(t, b.success.Load(), int64(0))
	assert.LessOrEqual(t, b.success.Load(), int64(unit))
	assert.Positive(t, taken.Load())
}
