package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sonnetLong is Claude Sonnet 4.5's price with its 1M-token context:
// prompts over 200,000 input tokens are billed twice Input and 1.5 times
// Output, every token of them.
var sonnetLong = Price{Input: 3 * Dollar, CachedInput: 30 * Cent, CacheWrite: 375 * Cent, Output: 15 * Dollar,
	LongContext: &LongContextPrice{Above: 200_000, Price: Price{Input: 6 * Dollar, CachedInput: 60 * Cent, CacheWrite: 750 * Cent, Output: 2250 * Cent}}}

// billAnthropic answers as Anthropic does, with usage of the request's
// prompt bound (its byte length, split into reads, writes and the rest as
// cache says) and max_tokens, and adds to billed what Anthropic bills for
// it: every token at the long-context prices when the prompt passes
// 200,000 tokens.
func billAnthropic(billed *atomic.Int64, cache [2]int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		cr, _ := parseChatRequest(body)
		input, reads, writes := len(body), cache[0], cache[1]
		in, read, write, out := 3*Dollar, 30*Cent, 375*Cent, 15*Dollar
		if input > 200_000 {
			in, read, write, out = 6*Dollar, 60*Cent, 750*Cent, 2250*Cent
		}
		cost := (Money(input-reads-writes)*in + Money(reads)*read + Money(writes)*write + Money(cr.MaxOutput)*out) / 1_000_000
		billed.Add(int64(cost))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"model":"claude-sonnet-4-5",`+
			`"usage":{"input_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":%d,"output_tokens":%d}}`,
			input-reads-writes, reads, writes, cr.MaxOutput)
	}
}

func anthropicBody(promptBytes int) string {
	const frame = `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":""}]}`
	return `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"` +
		strings.Repeat("w", promptBytes-len(frame)) + `"}]}`
}

func TestBudgetChargesTheLongContextPricesOfALongPrompt(t *testing.T) {
	for _, c := range []struct {
		name   string
		prompt int
		cache  [2]int // cache reads, cache writes
	}{
		{"short", 150_000, [2]int{}},
		{"at the threshold", 200_000, [2]int{}},
		{"long", 250_000, [2]int{}},
		{"long by its cache reads", 210_000, [2]int{190_000, 0}},
		{"long by its cache writes", 210_000, [2]int{0, 150_000}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, billAnthropic(&billed, c.cache))
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnetLong}, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/messages", anthropicBody(c.prompt), "Anthropic-Version", "2023-06-01")
			require.True(t, got.UsageKnown)
			assert.Equal(t, Money(billed.Load()), got.Charged)
		})
	}
}

// The promise: whatever mix of short and long prompts, the provider bills
// no more than the Limit. A long prompt's bound passes Above, so it is
// reserved at the long-context prices, and refused when those do not fit.
func TestBudgetLimitHoldsAgainstLongContextBills(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billAnthropic(&billed, [2]int{}))
	b := newTestBudget(t, BudgetConfig{Limit: 5 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnetLong}})
	var bodies []string
	for i := range 12 {
		bodies = append(bodies, anthropicBody(150_000+150_000*(i%2)))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}

// sendUntilTheLimit posts bodies to path on api through b, the Budget's
// refusals allowed, and checks the promise: some are served, some
// refused, the provider billed no more than the Limit, and exactly what
// the Budget charged.
func sendUntilTheLimit(t *testing.T, api *fakeAPI, b *Budget, path string, bodies []string, billed *atomic.Int64) {
	t.Helper()
	var reqs []*http.Request
	for _, body := range bodies {
		req, err := http.NewRequest(http.MethodPost, api.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		reqs = append(reqs, req)
	}
	sendRequestsUntilTheLimit(t, api, b, reqs, billed, 0)
}

// sendRequestsUntilTheLimit is sendUntilTheLimit for requests of any
// shape, of which one may cost up to beyond more than it reserved.
func sendRequestsUntilTheLimit(t *testing.T, api *fakeAPI, b *Budget, reqs []*http.Request, billed *atomic.Int64, beyond Money) {
	t.Helper()
	client := api.client(t, b)
	var served, refused int
	for _, req := range reqs {
		resp, err := client.Do(req)
		if err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			refused++
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		served++
	}
	assert.Positive(t, served)
	assert.Positive(t, refused)
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit()+beyond, "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
	assert.Equal(t, Money(billed.Load()), b.Spent())
}

func TestReservationOfALongPromptBoundUsesTheDearerPrices(t *testing.T) {
	short := sonnetLong.reserveTokens(200_000, 1000, 0)
	assert.Equal(t, short, sonnetLong.reserve(200_000, 1000, 0, 1), "a bound at Above is not long")
	long := sonnetLong.LongContext.reserveTokens(200_001, 1000, 0)
	assert.Equal(t, long, sonnetLong.reserve(200_001, 1000, 0, 1))
	assert.Greater(t, long, short)

	// Prices a table gets wrong (long cheaper than short) still reserve
	// the dearer; so does a fee per request.
	odd := Price{Input: 2 * Dollar, Output: 2 * Dollar, LongContext: &LongContextPrice{Above: 10, Price: Price{Input: Dollar, Output: Dollar, Request: Cent}}}
	assert.Equal(t, odd.reserveTokens(1_000_000, 0, 0), odd.reserve(1_000_000, 0, 0, 1))
	assert.Equal(t, odd.LongContext.reserveTokens(11, 0, 0)+3*Cent, odd.reserve(11, 0, 0, 3))
}

func TestCostUsesTheLongContextPricesPastAbove(t *testing.T) {
	long := sonnetLong.LongContext.Price
	for _, u := range []Usage{
		{InputTokens: 200_000, OutputTokens: 10},
		{InputTokens: 200_001, OutputTokens: 10},
		{InputTokens: 300_000, CachedInputTokens: 250_000, CacheWriteInputTokens: 40_000, OutputTokens: 10},
	} {
		want := sonnetLong
		want.LongContext = nil
		if u.InputTokens > 200_000 {
			want = long
		}
		assert.Equal(t, want.Cost(u), sonnetLong.Cost(u), "%+v", u)
	}
	assert.Equal(t, 2*Cent, Price{LongContext: &LongContextPrice{Above: 1, Price: Price{Request: 2 * Cent}}}.Cost(Usage{InputTokens: 2}))
}

func TestLoadPricesReadsLongContextPrices(t *testing.T) {
	table, err := LoadPrices(strings.NewReader(`{"claude-sonnet-4-5": {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "output": 15,
		"long_context": {"above": 200000, "input": 6, "cached_input": 0.6, "cache_write": 7.5, "output": 22.5}}}`))
	require.NoError(t, err)
	assert.Equal(t, sonnetLong, table["claude-sonnet-4-5"])

	for body, want := range map[string]string{
		`{"m": {"input": 1, "output": 1, "long_context": {"input": 2, "output": 2}}}`:                                    "above must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 0, "input": 2, "output": 2}}}`:                        "above must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 2.5, "input": 2, "output": 2}}}`:                      "above must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2}}}`:                                    "long_context: output is missing",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": -2, "output": 2}}}`:                      "LongContext.Input must be >= 0",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "long_context": null}}}`: "unknown field",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "ouptut": 2}}}`:          "unknown field",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 99999999999999999}}}`:       "long_context: output",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "request": 100000}}}`:    "Request must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 99999999999999999999, "input": 2, "output": 2}}}`:     "above must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": -10, "input": 2, "output": 2}}}`:                      "above must be",
		`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "cache_write_1h": -1}}}`: "LongContext.CacheWrite1h must be >= 0",
	} {
		_, err := LoadPrices(strings.NewReader(body))
		require.Error(t, err, body)
		assert.Contains(t, err.Error(), want, body)
	}
}

func TestNewBudgetRefusesABadLongContextPrice(t *testing.T) {
	for _, lc := range []*LongContextPrice{
		{Above: 0, Price: Price{Input: Dollar, Output: Dollar}},
		{Above: 10, Price: Price{Input: -Dollar, Output: Dollar}},
		{Above: 10, Price: Price{Input: Dollar, Output: Dollar, LongContext: &LongContextPrice{Above: 20}}},
	} {
		_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": {Input: Dollar, Output: Dollar, LongContext: lc}}})
		assert.ErrorContains(t, err, "LongContext", "%+v", lc)
	}
}

// NewBudget copies its Prices: a caller that edits its table's long-context
// price afterwards (to reuse the table for a provider without the 1M-token
// context, say) changes nothing in the Budget, and the Limit still holds
// against what the provider bills.
func TestBudgetLimitHoldsWhenTheCallerEditsItsLongContextPriceAfterwards(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billAnthropic(&billed, [2]int{}))
	long := *sonnetLong.LongContext
	sonnet := sonnetLong
	sonnet.LongContext = &long
	prices := PriceTable{"claude-sonnet-4-5": sonnet}
	b := newTestBudget(t, BudgetConfig{Limit: 5 * Dollar, Prices: prices})
	prices["claude-sonnet-4-5"].LongContext.Above = 1 << 40
	prices["claude-sonnet-4-5"].LongContext.Price = Price{Input: 3 * Dollar, Output: 15 * Dollar}
	var bodies []string
	for range 12 {
		bodies = append(bodies, anthropicBody(300_000))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}
