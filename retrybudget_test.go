package httpguard

import (
	"io"
	"math/rand/v2"
	"net/http"
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
	assert.LessOrEqual(t, amplification, 1.2)
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

func TestEveryRequestSucceedsAtFivePercentTransientErrors(t *testing.T) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	var failures atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		mu.Lock()
		fail := rng.Float64() < 0.05
		mu.Unlock()
		if fail {
			failures.Add(1)
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	const n = 2000
	ok := sendN(t, clientFor(t, r), s.URL, n)
	require.Positive(t, failures.Load())
	assert.Equal(t, n, ok)
}

func TestRetriesRecoverWhenTheOutageEnds(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	c := clientFor(t, r)
	sendN(t, c, s.URL, 100)
	require.False(t, r.tokens.allow(), "the outage spent the budget")

	down.Store(false)
	sendN(t, c, s.URL, 200)
	assert.True(t, r.tokens.allow(), "successes refilled the budget")

	// A transient failure is retried again.
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
	p.Budget.Disabled = true
	r, _ := newTestRetrier(t, p)
	sendN(t, clientFor(t, r), s.URL, 50)
	assert.EqualValues(t, 200, s.hits.Load())
}

func TestRetryTokensStayWithinBounds(t *testing.T) {
	tk := newRetryTokens(RetryBudget{Tokens: 4, Refund: 1})
	for i := 0; i < 10; i++ {
		tk.failed()
	}
	assert.Zero(t, tk.level.Load())
	assert.False(t, tk.allow())
	for i := 0; i < 10; i++ {
		tk.succeeded()
	}
	assert.EqualValues(t, 4*milli, tk.level.Load())
	assert.True(t, tk.allow())
	assert.True(t, (*retryTokens)(nil).allow())
}
