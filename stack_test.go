package httpguard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The recommended stack, Retrier → Budget → Limiter → base, against the
// fault-injecting server: what each layer promises must still hold when the
// others are around it.

type stack struct {
	srv     *httpguardtest.Server
	budget  *Budget
	limiter *Limiter
	client  *http.Client
}

// newStack builds the stack with millisecond retry waits and testPrices (a
// prompt token costs 1,000 nano-dollars, an output token 2,000).
func newStack(t *testing.T, cfg httpguardtest.Config) *stack {
	t.Helper()
	srv, err := httpguardtest.NewServer(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	p := DefaultRetryPolicy()
	p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, 2*time.Millisecond, 0
	p.RetryBudget.Disabled = true
	r, err := NewRetrier(p)
	require.NoError(t, err)
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 6_000_000})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &stack{srv: srv, budget: b, limiter: l, client: &http.Client{Transport: Chain(base, r, b, l)}}
}

// billed is what the server's answers sent whole cost.
func (s *stack) billed() Money {
	st := s.srv.Stats()
	return Money(st.PromptTokens)*1000 + Money(st.CompletionTokens)*2000
}

// billable is what a provider that bills every attempt reaching its model
// may bill.
func (s *stack) billable() Money {
	st := s.srv.Stats()
	return Money(st.BillablePromptTokens)*1000 + Money(st.BillableCompletionTokens)*2000
}

func (s *stack) reserved(t *testing.T) Money {
	t.Helper()
	_, reserved, ok := s.budget.totals()
	require.True(t, ok)
	return reserved
}

// call posts body and reads the answer to its end, returning its status.
func (s *stack) call(t *testing.T, body string) int {
	t.Helper()
	resp, err := s.post(t, body)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (s *stack) post(t *testing.T, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest("POST", s.srv.BaseURL()+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return s.client.Do(req)
}

func TestStackSettlesA503Then200ToThe200sUsage(t *testing.T) {
	s := newStack(t, httpguardtest.Config{CompletionTokens: 7})
	require.NoError(t, s.srv.Enqueue(httpguardtest.ServiceUnavailable()))

	resp, err := s.post(t, chatBody("m", 100))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	assert.EqualValues(t, 2, s.srv.Stats().Requests)
	assert.Equal(t, s.billed(), s.budget.Spent(), "one settlement, at the 200's usage")
	assert.Zero(t, s.reserved(t))
}

func TestStackChargesAStreamCutMidwayItsReservation(t *testing.T) {
	s := newStack(t, httpguardtest.Config{CompletionTokens: 20})
	require.NoError(t, s.srv.Enqueue(httpguardtest.CutStream(3)))
	body := `{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}`

	resp, err := s.post(t, body)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.Error(t, err, "the stream was cut")
	require.NoError(t, resp.Body.Close())

	assert.Equal(t, reservation(body, 100), s.budget.Spent())
	assert.Zero(t, s.reserved(t))
}

func TestStackLimiterCorrectsTokensFromTheUsageTheBudgetAddedToAStream(t *testing.T) {
	s := newStack(t, httpguardtest.Config{CompletionTokens: 20})
	clk := newFakeClock(moveOn) // the Limiter's bucket must not refill meanwhile
	s.limiter.now, s.limiter.cfg.Store = clk.Now, newMemoryLimitStore(clk.Now)
	body := `{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}`

	resp, err := s.post(t, body)
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	assert.NotContains(t, string(got), `"usage":{`, "the caller did not ask for the usage chunk")
	st := s.srv.Stats()
	used := st.PromptTokens + st.CompletionTokens
	key := strings.TrimPrefix(s.srv.URL, "http://") + " m"
	assert.InDelta(t, 6_000_000-used, available(t, s.limiter, key), 1e-6, "the overestimate was given back")
}

func TestStackChargesEveryAttemptResetAfterWriting(t *testing.T) {
	s := newStack(t, httpguardtest.Config{})
	require.NoError(t, s.srv.StartOutage(httpguardtest.ConnectionReset()))
	body := chatBody("m", 100)

	_, err := s.post(t, body)

	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 6, re.Attempts)
	assert.Equal(t, 6*reservation(body, 100), s.budget.Spent(), "the provider had each attempt and may have billed each")
	assert.Zero(t, s.reserved(t))
}

func TestStackKeepsALostAttemptChargedThroughThe503sAfterIt(t *testing.T) {
	s := newStack(t, httpguardtest.Config{})
	faults := []httpguardtest.Fault{httpguardtest.ConnectionReset()}
	for range 5 { // the Retrier's five retries
		faults = append(faults, httpguardtest.ServiceUnavailable())
	}
	require.NoError(t, s.srv.Enqueue(faults...))
	body := chatBody("m", 100)

	assert.Equal(t, http.StatusServiceUnavailable, s.call(t, body))
	assert.Equal(t, reservation(body, 100), s.budget.Spent(), "the lost attempt's reservation stays charged; the 503s cost nothing")
	assert.Positive(t, s.billable(), "the provider had the first attempt")
	assert.LessOrEqual(t, s.billable(), s.budget.Spent())
	assert.Zero(t, s.reserved(t))
}

func TestStackChargesALostAttemptAndTheAnswerAfterIt(t *testing.T) {
	s := newStack(t, httpguardtest.Config{CompletionTokens: 7})
	require.NoError(t, s.srv.Enqueue(httpguardtest.ConnectionReset()))
	body := chatBody("m", 100)

	assert.Equal(t, http.StatusOK, s.call(t, body))
	assert.Equal(t, reservation(body, 100)+s.billed(), s.budget.Spent())
	assert.LessOrEqual(t, s.billable(), s.budget.Spent())
	assert.Zero(t, s.reserved(t))
}

// callThrough posts a chat request to srv through a Retrier following p
// and then b, and reads the answer to its end.
func callThrough(t *testing.T, srv *httpguardtest.Server, p RetryPolicy, b *Budget) {
	t.Helper()
	r, err := NewRetrier(p)
	require.NoError(t, err)
	callThroughRetrier(t, srv, r, b)
}

// callThroughRetrier is callThrough with r for the Retrier.
func callThroughRetrier(t *testing.T, srv *httpguardtest.Server, r *Retrier, b *Budget) {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	c := &http.Client{Transport: Chain(base, r, b)}
	resp, err := c.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody("m", 100)))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestStackChargesA2xxThatAClassifierRetries(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 5})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	p := RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
	first := true
	p.Classify = func(context.Context, *http.Response, error) (bool, error) {
		retry := first
		first = false
		return retry, nil // a classifier of the user's that retries the first answer, a 200
	}
	callThrough(t, srv, p, b)

	st := srv.Stats()
	require.EqualValues(t, 2, st.Requests)
	assert.Equal(t, Money(st.PromptTokens)*1000+Money(st.CompletionTokens)*2000, b.Spent(),
		"both answers were billed, the discarded one too")
}

func TestStackSettlesEveryReservationOnceUnderConcurrentFaults(t *testing.T) {
	s := newStack(t, httpguardtest.Config{CompletionTokens: 9, FaultRate: 0.4, Seed: 7, Faults: []httpguardtest.Fault{
		httpguardtest.ServiceUnavailable(), httpguardtest.Overloaded(), httpguardtest.ConnectionReset(),
		httpguardtest.CutStream(2), httpguardtest.RateLimited(3 * time.Millisecond),
		httpguardtest.SlowHeaders(5 * time.Millisecond),
	}})
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":"m","max_tokens":50,"stream":%v,"messages":[{"role":"user","content":"hello %d"}]}`, i%2 == 0, i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", s.srv.BaseURL()+"/chat/completions", strings.NewReader(body))
			if !assert.NoError(t, err) {
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := s.client.Do(req)
			if err != nil {
				return // retries ran out: the reservation must still be settled
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()

	assert.Zero(t, s.reserved(t), "every reservation was settled")
	assert.GreaterOrEqual(t, s.budget.Spent(), s.billed(), "never less than the provider billed")
}

func TestStackReadsAndParsesTheRequestBodyOnce(t *testing.T) {
	s := newStack(t, httpguardtest.Config{})
	body := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}`
	req, err := http.NewRequest("POST", s.srv.BaseURL()+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	getBody, reads := req.GetBody, 0
	req.GetBody = func() (io.ReadCloser, error) { reads++; return getBody() }

	resp, err := s.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, 1, reads, "the Budget reads the body to price it; the Limiter below reuses what it parsed")
	assert.Equal(t, 1, s.limiter.Stats().Keys, "the Limiter still keyed the request by its model")
}

func TestLimiterUnderABudgetCountsTheBodyALayerInBetweenRewrote(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{FallbackModel: {Input: Dollar, Output: Dollar}}})
	var keys []string
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 6_000_000, Key: func(_ *http.Request, model string) string {
		keys = append(keys, model)
		return model
	}})
	require.NoError(t, err)
	rewrite := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			r := req.Clone(req.Context())
			setBody(r, []byte(`{"model":"deepseek-v3.2","messages":[]}`))
			req.Body.Close()
			return next.RoundTrip(r)
		})
	})
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	c := &http.Client{Transport: Chain(base, b, rewrite, l)}

	resp, err := c.Post(srv.BaseURL()+"/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, []string{"deepseek-v3.2"}, keys, "the Limiter keyed the body it sent, not the one the Budget priced")
}

// TestStackNeverLetsTheProviderBillMoreThanTheLimit is the Budget's promise
// under attack: a server that bills every attempt reaching its model,
// answered or not, faults of every kind, retries and attempt timeouts, and
// more callers than the cap can serve. What the provider may bill stays
// within what the Budget charged, which stays within the Limit.
func TestStackNeverLetsTheProviderBillMoreThanTheLimit(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 40, FaultRate: 0.5, Seed: 11, Faults: []httpguardtest.Fault{
		httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset(), httpguardtest.CutStream(2),
		httpguardtest.SlowHeaders(40 * time.Millisecond), httpguardtest.Overloaded(),
	}})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	body := func(i int) string { // every fourth asks for two choices, which the server bills both of
		return fmt.Sprintf(`{"model":"m","max_tokens":50,"n":%d,"stream":%v,"messages":[{"role":"user","content":"hello %03d"}]}`, 1+b2i(i%4 == 1), i%3 == 0, i)
	}
	limit := 25 * reservation(body(0), 50)
	b := newTestBudget(t, BudgetConfig{Limit: limit, MaxWait: 30 * time.Millisecond})
	// The attempt timeouts are fired by the transport under the Budget, not
	// by a real 15ms timer from the attempt's start, which on a loaded
	// machine now and then ran out before any request was written (0
	// reached the server): every fifth attempt times out before it is sent,
	// the others 15ms after the server has the whole request, which cuts
	// the ones it holds (SlowHeaders) once it has billed them.
	p := RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, AttemptTimeout: time.Hour}
	r, err := NewRetrier(p)
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(&timeoutOnceSent{base: base, after: 15 * time.Millisecond, early: 5}, r, b)}

	var wg sync.WaitGroup
	for i := range 150 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body(i)))
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()

	st := srv.Stats()
	billable := Money(st.BillablePromptTokens)*1000 + Money(st.BillableCompletionTokens)*2000
	settled, held, ok := b.totals()
	require.True(t, ok)
	assert.Zero(t, held, "every attempt was settled")
	assert.Positive(t, billable)
	assert.LessOrEqual(t, billable, settled, "the provider may bill no more than was charged")
	assert.LessOrEqual(t, settled, limit, "and that stays within the Limit")
	t.Logf("limit %v, charged %v, provider may bill %v, answered in full %v; %d requests reached the server",
		limit, settled, billable, Money(st.PromptTokens)*1000+Money(st.CompletionTokens)*2000, st.Requests)
}

// TestStackWorksWithAndWithoutEachLayer runs every combination of the three
// layers, in the recommended order, against the same faults: each layer
// keeps its promise whoever else is there.
func TestStackWorksWithAndWithoutEachLayer(t *testing.T) {
	for mask := 1; mask < 8; mask++ {
		withRetrier, withBudget, withLimiter := mask&1 != 0, mask&2 != 0, mask&4 != 0
		name := fmt.Sprintf("retrier=%v/budget=%v/limiter=%v", withRetrier, withBudget, withLimiter)
		t.Run(name, func(t *testing.T) {
			srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 8, FaultRate: 0.2, Seed: 5,
				Faults: []httpguardtest.Fault{httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset()}})
			require.NoError(t, err)
			t.Cleanup(srv.Close)
			var layers []Layer
			if withRetrier {
				p := RetryPolicy{MaxRetries: 5, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
				r, err := NewRetrier(p)
				require.NoError(t, err)
				layers = append(layers, r)
			}
			var b *Budget
			if withBudget {
				b = newTestBudget(t, BudgetConfig{Limit: Dollar})
				layers = append(layers, b)
			}
			var l *Limiter
			if withLimiter {
				l, err = NewLimiter(LimitConfig{RequestsPerSecond: 1e6, Burst: 1000, TokensPerMinute: 60_000_000})
				require.NoError(t, err)
				layers = append(layers, l)
			}
			base := &http.Transport{}
			t.Cleanup(base.CloseIdleConnections)
			client := &http.Client{Transport: Chain(base, layers...)}

			ok := 0
			for i := range 30 {
				body := fmt.Sprintf(`{"model":"m","max_tokens":20,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, i%2 == 0)
				resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					continue
				}
				_, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && rerr == nil {
					ok++
				}
			}
			st := srv.Stats()
			if withRetrier {
				assert.Equal(t, 30, ok, "the Retrier turns 20%% faults into successes")
			} else {
				assert.Less(t, ok, 30, "without it, faults reach the caller")
			}
			if withBudget {
				settled, held, okTotals := b.totals()
				require.True(t, okTotals)
				assert.Zero(t, held)
				billable := Money(st.BillablePromptTokens)*1000 + Money(st.BillableCompletionTokens)*2000
				assert.LessOrEqual(t, billable, settled)
			}
			if withLimiter {
				assert.EqualValues(t, st.Requests, l.Stats().Requests, "the Limiter saw every attempt")
			}
		})
	}
}

func TestStackScansEachAnswerOnce(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	store := new(adjustLog).on(NewMemoryLimitStore())
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 6_000_000, OutputEstimate: 50, Store: store})
	require.NoError(t, err)
	rt := Chain(cannedTransport{body: `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`}, b, l)
	req, err := http.NewRequest("POST", "http://api.test/v1/chat/completions", strings.NewReader(chatBody("m", 100)))
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)

	ur, ok := resp.Body.(*usageReader)
	require.True(t, ok, "the Budget reads the usage")
	_, twice := ur.body.(*settlement)
	assert.False(t, twice, "the Limiter hears the usage from the Budget instead of scanning the answer again")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, Money(3*1000+4*2000), b.Spent())
	body := chatBody("m", 100)
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	estimate := cr.EstimatedPromptTokens + cr.MaxOutput
	assert.Equal(t, []int64{3 + 4 - estimate}, store.adjusted(), "the Limiter still corrects its estimate, once, from the usage the Budget read")
}

// slowReserveStore answers its first Reserve only once the attempt's
// context has ended, as a shared store may answer after an AttemptTimeout.
type slowReserveStore struct {
	*MemoryBudgetStore
	slow    atomic.Bool
	stalled chan struct{} // closed as the slow Reserve starts to wait
}

func (s *slowReserveStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	res, err := s.MemoryBudgetStore.Reserve(ctx, r, limit)
	if s.slow.CompareAndSwap(true, false) {
		close(s.stalled)
		<-ctx.Done()
	}
	return res, err
}

// An attempt whose AttemptTimeout ends after the Budget reserved it but
// before it was sent costs nothing and is retried, as one that timed out
// in net/http would be: the request is not given up.
func TestStackRetriesAnAttemptTimedOutBeforeTheBudgetSentIt(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 7})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	store := &slowReserveStore{MemoryBudgetStore: NewMemoryBudgetStore(), stalled: make(chan struct{})}
	store.slow.Store(true)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Store: store})
	// The first attempt's timeout fires once its Reserve stalls; the second
	// has all the time it needs (a real 20ms timeout also ended it, now and
	// then, on a loaded machine).
	p := RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, AttemptTimeout: time.Hour}
	r, err := NewRetrier(p)
	require.NoError(t, err)
	var attempts atomic.Int32
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == p.AttemptTimeout && attempts.Add(1) == 1 {
			go func() {
				select {
				case <-store.stalled:
					f()
				case <-t.Context().Done():
				}
			}()
		}
		return time.AfterFunc(d, f)
	}
	callThroughRetrier(t, srv, r, b)

	st := srv.Stats()
	assert.EqualValues(t, 1, st.Requests, "the timed-out attempt was never sent")
	assert.Equal(t, Money(st.PromptTokens)*1000+Money(st.CompletionTokens)*2000, b.Spent(), "only the answer is charged")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// timeoutOnceSent fires the AttemptTimeout of the attempts it sends by
// hand: every early-th at once, before it is sent; the others after, once
// the request is written (the server has it all), unless their headers
// came first (the Retrier stops the timer then).
type timeoutOnceSent struct {
	base  http.RoundTripper
	after time.Duration
	early int64
	n     atomic.Int64
}

func (s *timeoutOnceSent) RoundTrip(req *http.Request) (*http.Response, error) {
	a, _ := req.Context().Value(attemptTimerKey{}).(*attemptTimer)
	if a != nil {
		if s.n.Add(1)%s.early == 0 {
			a.fire()
		} else {
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { time.AfterFunc(s.after, a.fire) }}
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		}
	}
	return s.base.RoundTrip(req)
}
