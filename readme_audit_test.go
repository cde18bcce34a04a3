package httpguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's table of what the Budget charges, and doc.go's: an attempt
// whose context ends while it waits for its turn in a Limiter below the
// Budget was never sent, and is released: the Limiter marks its error a
// refusal, unlike a context that ends in another layer below before
// net/http asks for a connection, which is charged its reservation.
func TestABudgetReleasesAnAttemptCanceledInTheLimitersQueue(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	tr := srv.Client().Transport.(*http.Transport)
	t.Cleanup(func() { tr.CloseIdleConnections(); srv.Close() })

	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1}, clk)
	b, err := NewBudget(BudgetConfig{Limit: 1000 * Dollar, Prices: testPrices})
	require.NoError(t, err)
	c := &http.Client{Transport: Chain(tr, b, l)}
	body := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

	resp, err := c.Post(srv.URL, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	spent := b.Spent()
	require.Positive(t, spent, "the first request's usage")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
		_, err := c.Do(req)
		done <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond, "the second request queued in the Limiter")
	cancel()
	err = <-done

	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, IsRefusal(err), "nothing was sent: %v", err)
	assert.EqualValues(t, 1, hits.Load())
	assert.Equal(t, spent, b.Spent(), "released, not charged")
	settled, held, err := b.Totals(context.Background())
	require.NoError(t, err)
	assert.Equal(t, spent, settled)
	assert.Zero(t, held, "nothing left held")
}

// The README's table of what the Budget charges: "a context that ends
// after, in a layer below, before net/http asks for a connection, is
// charged its reservation": no trace tells the Budget the request was not
// written. A layer below that ends the context and passes the request on
// unmarked (not a refusal) leaves the reservation charged.
func TestABudgetChargesAnAttemptWhoseContextEndsInALayerBelowIt(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	tr := srv.Client().Transport.(*http.Transport)
	t.Cleanup(func() { tr.CloseIdleConnections(); srv.Close() })

	b, err := NewBudget(BudgetConfig{Limit: 1000 * Dollar, Prices: testPrices})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	endsIt := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			cancel()
			return next.RoundTrip(r)
		})
	})
	c := &http.Client{Transport: Chain(tr, b, endsIt)}
	body := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(body))
	require.NoError(t, err)
	_, err = c.Do(req)

	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, IsRefusal(err), "the Budget cannot tell it was not written")
	assert.Zero(t, hits.Load(), "net/http sent nothing")
	assert.Equal(t, reservation(body, 10), b.Spent(), "charged its whole reservation")
}

// The README's example of a Budget's refusal ("Refusals say what to do")
// is what a BudgetError with those figures prints, word for word.
func TestTheREADMEsBudgetRefusalIsWhatABudgetErrorPrints(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	e := &BudgetError{Model: "gpt-4.1", Need: 123 * Dollar / 10_000, Remaining: 45 * Dollar / 10_000,
		Reset: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), PromptTokens: 1800, Choices: 1, OutputTokens: 1000, MaxTokensSet: true}
	msg := e.Error()
	assert.Contains(t, strings.Join(strings.Fields(string(readme)), " "), "`"+msg+"`", "the README shows %s", msg)
	assert.ErrorIs(t, e, ErrBudgetExceeded)
}

// The README's Fallback example: "The Budget prices each attempt at the
// model it is sent to: its prices must cover gpt-4.1-mini too, or it
// refuses the move (ErrUnknownModel) and the caller gets the primary's
// failure."
func TestAFallbackTheBudgetCannotPriceLeavesTheCallerThePrimarysFailure(t *testing.T) {
	primary, tr, f, secondHits := unpricedFallback(t, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"message":"overloaded"}}`)
	})
	p := DefaultRetryPolicy()
	p.MaxRetries, p.BaseDelay, p.MaxDelay, p.Jitter = 1, time.Millisecond, time.Millisecond, 0
	retrier, err := NewRetrier(p)
	require.NoError(t, err)
	budget, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"deepseek-v3.2": {Input: Dollar, Output: Dollar}}})
	require.NoError(t, err)
	c := &http.Client{Transport: Chain(tr, f, retrier, budget)}

	resp, err := c.Post(primary.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err, "the primary's failure, not the Budget's refusal of the move")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.JSONEq(t, `{"error":{"message":"overloaded"}}`, string(body))
	assert.Equal(t, "holysheep", resp.Header.Get(TargetHeader))
	assert.Zero(t, secondHits.Load(), "the move was refused, unsent")
}

// unpricedFallback is the README's Fallback example on loopback: a
// primary answering with answer, and a second target, counting its hits,
// to which the Fallback moves deepseek-v3.2 as gpt-4.1-mini.
func unpricedFallback(t *testing.T, answer func(http.ResponseWriter)) (primary *httptest.Server, tr *http.Transport, f *Fallback, secondHits *atomic.Int32) {
	t.Helper()
	secondHits = new(atomic.Int32)
	primary = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer(w)
	}))
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secondHits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	tr = &http.Transport{}
	t.Cleanup(func() { tr.CloseIdleConnections(); primary.Close(); second.Close() })
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "holysheep", BaseURL: primary.URL + "/v1"},
		{Name: "openai", BaseURL: second.URL + "/v1", Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}},
	}})
	require.NoError(t, err)
	return primary, tr, f, secondHits
}

// The same comment's parenthetical: "(or, once the primary's circuit is
// open and no target received the request, that ErrUnknownModel)": with the
// primary's circuit open, no target receives the call, and the caller gets
// the last target's outcome, the Budget's refusal of the unpriced model.
func TestAFallbackTheBudgetCannotPriceBehindAnOpenCircuitLeavesTheCallerErrUnknownModel(t *testing.T) {
	var primaryHits atomic.Int32
	primary, tr, f, secondHits := unpricedFallback(t, func(w http.ResponseWriter) {
		primaryHits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	retrier, err := NewRetrier(p)
	require.NoError(t, err)
	breaker, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Hour})
	require.NoError(t, err)
	budget, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"deepseek-v3.2": {Input: Dollar, Output: Dollar}}})
	require.NoError(t, err)
	c := &http.Client{Transport: Chain(tr, f, retrier, breaker, budget)}
	post := func() (*http.Response, error) {
		return c.Post(primary.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	}

	resp, err := post()
	require.NoError(t, err, "before the circuit opens: the primary's failure")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	_, err = post()
	require.Error(t, err, "the circuit open, no target received the call")
	assert.ErrorIs(t, err, ErrUnknownModel)
	assert.EqualValues(t, 1, primaryHits.Load(), "the open circuit sent nothing")
	assert.Zero(t, secondHits.Load(), "the move was refused, unsent")
}
