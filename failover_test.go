package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The whole stack, Fallback → Retrier → Breaker → Budget → base, against
// two fault servers: a fallback keeps the retry budget, the circuits and
// the spend cap of the stack it joins.

// failoverPrices price the primary's model ten times the second's.
var failoverPrices = PriceTable{
	"big":   {Input: 10 * Dollar, CachedInput: Dollar, Output: 20 * Dollar},
	"small": {Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar},
}

// billableAt is what srv may bill for the attempts that reached it, at
// price p.
func billableAt(srv *httpguardtest.Server, p Price) Money {
	st := srv.Stats()
	return p.Cost(Usage{InputTokens: st.BillablePromptTokens, CachedInputTokens: st.BillableCachedTokens, OutputTokens: st.BillableCompletionTokens})
}

// failover is the stack under test; any layer may be nil.
type failover struct {
	primary, second *httpguardtest.Server
	fallback        *Fallback
	retrier         *Retrier
	breaker         *breakerRig
	budget          *Budget
	client          *http.Client
}

// failoverSetup says what newFailover builds: the two servers, and the
// optional Breaker and Budget.
type failoverSetup struct {
	primary, second httpguardtest.Config
	breaker         *BreakerConfig // nil: no Breaker
	budget          *Budget
}

func newFailover(t *testing.T, c failoverSetup) *failover {
	t.Helper()
	s := &failover{primary: newFaultServer(t, c.primary), second: newFaultServer(t, c.second), budget: c.budget}
	var err error
	s.fallback, err = NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: s.primary.BaseURL()},
		{Name: "second", BaseURL: s.second.BaseURL(), Models: map[string]string{"big": "small"}},
	}})
	require.NoError(t, err)
	s.retrier, _ = newTestRetrier(t, RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	layers := []Layer{s.fallback, s.retrier}
	if c.breaker != nil {
		s.breaker = newBreakerRig(t, *c.breaker)
		layers = append(layers, s.breaker.b)
	}
	if c.budget != nil {
		layers = append(layers, c.budget)
	}
	s.client = clientFor(t, layers...)
	return s
}

// call sends a chat request for model big and reads the answer; it
// returns the status (0 after an error) and the target that answered.
func (s *failover) call(body string) (int, string) {
	resp, err := s.client.Post(s.primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, ""
	}
	return resp.StatusCode, resp.Header.Get(TargetHeader)
}

func TestFailoverServesEveryCallWhileThePrimaryIsDownAndStopsHittingIt(t *testing.T) {
	s := newFailover(t, failoverSetup{breaker: &BreakerConfig{}})
	require.NoError(t, s.primary.StartOutage(httpguardtest.ServiceUnavailable()))

	for i := range 50 {
		status, target := s.call(chatBody("big", 16))
		require.Equal(t, http.StatusOK, status, "call %d", i)
		require.Equal(t, "second", target)
	}

	assert.EqualValues(t, DefaultConsecutiveFailures, s.primary.Stats().Requests,
		"the first call's 4 attempts, the second call's first: then the circuit is open")
	assert.EqualValues(t, 50, s.second.Stats().Requests)
	for _, r := range s.second.Requests() {
		assert.Contains(t, string(r.Body), `"model":"small"`)
	}
}

// In a full outage of every target one Retrier's budget covers them all:
// near one request per call per target, not a full set of retries each.
func TestFailoverFullOutageStaysNearOneRequestPerCallPerTarget(t *testing.T) {
	const calls = 300
	for _, withBreaker := range []bool{false, true} {
		t.Run(fmt.Sprintf("breaker=%v", withBreaker), func(t *testing.T) {
			c := failoverSetup{}
			if withBreaker {
				c.breaker = &BreakerConfig{}
			}
			s := newFailover(t, c)
			require.NoError(t, s.primary.StartOutage(httpguardtest.ServiceUnavailable()))
			require.NoError(t, s.second.StartOutage(httpguardtest.Overloaded()))

			for range calls {
				status, _ := s.call(chatBody("big", 16))
				require.NotEqual(t, http.StatusOK, status)
			}

			p, q := float64(s.primary.Stats().Requests)/calls, float64(s.second.Stats().Requests)/calls
			t.Logf("requests per call: primary %.3f, second %.3f", p, q)
			if withBreaker {
				assert.EqualValues(t, DefaultConsecutiveFailures, s.primary.Stats().Requests)
				assert.EqualValues(t, DefaultConsecutiveFailures, s.second.Stats().Requests)
				return
			}
			assert.Less(t, p, 1.1)
			assert.Less(t, q, 1.1)
		})
	}
}

// The Budget inside the Retrier prices each attempt at the model the body
// it sends names: the primary's attempts at big, the second's at small.
func TestFailoverBudgetPricesEachAttemptAtTheModelItWasSentTo(t *testing.T) {
	var mu sync.Mutex
	charged := map[string]Money{}
	budget := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: failoverPrices, OnSettle: func(s Settlement) {
		mu.Lock()
		charged[s.Model] += s.Charged
		mu.Unlock()
	}})
	s := newFailover(t, failoverSetup{breaker: &BreakerConfig{}, budget: budget})
	// The primary reads each request, runs it, then resets the connection:
	// it may bill every attempt.
	require.NoError(t, s.primary.StartOutage(httpguardtest.ConnectionReset()))

	for range 10 {
		status, target := s.call(chatBody("big", 16))
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, "second", target)
	}

	mu.Lock()
	defer mu.Unlock()
	big, small := billableAt(s.primary, failoverPrices["big"]), billableAt(s.second, failoverPrices["small"])
	require.Positive(t, big)
	require.Positive(t, small)
	assert.GreaterOrEqual(t, charged["big"], big, "the primary's lost attempts are charged at big's price")
	assert.Equal(t, small, charged["small"], "the second's answers are charged at small's price, exactly")
	assert.Equal(t, charged["big"]+charged["small"], budget.Spent())
}

// Whatever the mix of targets, faults and retries, what the providers may
// bill stays within what the Budget charged, which stays within its Limit.
func TestFailoverNeverPassesTheSpendCapAcrossTargets(t *testing.T) {
	body := func(i int) string {
		return fmt.Sprintf(`{"model":"big","max_tokens":40,"stream":%v,"messages":[{"role":"user","content":"hello %03d"}]}`, i%2 == 0, i)
	}
	big := failoverPrices["big"]
	limit := 30 * big.reserveTokens(int64(len(body(0))), 40, 0)
	budget := newTestBudget(t, BudgetConfig{Limit: limit, Prices: failoverPrices, MaxWait: -1})
	faults := []httpguardtest.Fault{httpguardtest.ConnectionReset(), httpguardtest.CutStream(1), httpguardtest.ServiceUnavailable()}
	s := newFailover(t, failoverSetup{
		primary: httpguardtest.Config{CompletionTokens: 30, FaultRate: 0.9, Seed: 5, Faults: faults},
		second:  httpguardtest.Config{CompletionTokens: 30, FaultRate: 0.3, Seed: 6, Faults: faults},
		breaker: &BreakerConfig{ConsecutiveFailures: 1_000_000, MinCalls: -1}, // keeps the primary in play
		budget:  budget,
	})

	var wg sync.WaitGroup
	for i := range 120 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.call(body(i))
		}()
	}
	wg.Wait()

	settled, held, ok := budget.totals()
	require.True(t, ok)
	assert.Zero(t, held)
	billable := billableAt(s.primary, failoverPrices["big"]) + billableAt(s.second, failoverPrices["small"])
	require.Positive(t, s.second.Stats().BillablePromptTokens, "the second target was used")
	assert.LessOrEqual(t, billable, settled, "the providers may bill no more than was charged")
	assert.LessOrEqual(t, settled, limit)
	t.Logf("limit %v, charged %v, providers may bill %v; %d requests to the primary, %d to the second",
		limit, settled, billable, s.primary.Stats().Requests, s.second.Stats().Requests)
}

// A provider is far more often degraded than down. With the primary down,
// the last target is where every call goes: when it is degraded but alive
// (one answer in five a 503), its circuit must not refuse calls that the
// same stack without a Breaker would serve. With a fixed run of 5 and a
// circuit reopened by any failed probe, it served 1,255 of 2,000 calls
// against 1,681.
func TestFailoverBreakerServesADegradedLastTarget(t *testing.T) {
	const calls = 2000
	served := map[bool]int{}
	for _, withBreaker := range []bool{false, true} {
		var bc *BreakerConfig
		if withBreaker {
			bc = &BreakerConfig{}
		}
		s := newFailover(t, failoverSetup{breaker: bc, second: httpguardtest.Config{
			FaultRate: 0.2, Faults: []httpguardtest.Fault{httpguardtest.ServiceUnavailable()}, Seed: 7}})
		require.NoError(t, s.primary.StartOutage(httpguardtest.ServiceUnavailable()))
		for range calls {
			if status, _ := s.call(chatBody("big", 16)); status == http.StatusOK {
				served[withBreaker]++
			}
			if s.breaker != nil {
				s.breaker.clock.Advance(10 * time.Millisecond) // 100 calls a second
			}
		}
	}

	assert.GreaterOrEqual(t, served[true], served[false]*99/100,
		"calls served of %d: %d with the Breaker, %d without", calls, served[true], served[false])
}
