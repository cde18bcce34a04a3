package httpguard

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks the bookkeeping's fast paths against the general paths
// they spare: each must give exactly what the general path gives, over
// every combination of what an answer can say.

// settledAs returns the Settlement an attempt for model, priced at the
// table's entry and reserving reserve, hears when settle (or, when
// repriced is set, the general settleRepriced) charges u.
func settledAs(t *testing.T, prices PriceTable, model string, fallback bool, u Usage, known bool, lost int64, repriced bool, tools *serverTools) Settlement {
	t.Helper()
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: MaxBudgetLimit, Prices: prices, ToolPrices: map[string]Money{"web_search": Cent}, OnSettle: func(s Settlement) { got = s }})
	price, _, ok := prices.lookup(model, tierStandard)
	if !ok {
		price = prices[FallbackModel]
	}
	a := &budgetAttempt{Context: context.Background(), b: b, window: "lifetime", price: &price}
	if fallback {
		a.pricedBy = byFallback
	}
	a.parsed.chat = chatRequest{Model: model, Choices: 1, MaxOutput: 100, PromptTokens: 50, Tools: tools}
	a.named = hashModel(model) // as RoundTrip sets it, from the price looked up
	a.reserve = a.reserveAt(price)
	if repriced {
		a.flags.Or(attemptSettled)
		a.settleRepriced(&u, known, lost)
	} else {
		a.settle(&u, known, lost)
	}
	return got
}

// settleCases returns a price table with entries for Priority, the US
// region and FallbackModel, the models requests name (the last priced by
// FallbackModel) and those answers may name ("" for none).
func settleCases() (prices PriceTable, models, served []string) {
	prices = ExamplePrices()
	prices["gpt-4.1"+PriorityTier] = Price{Input: 350 * Cent, Output: 14 * Dollar}
	prices["claude-sonnet-4-5@us"] = Price{Input: 330 * Cent, Output: 1650 * Cent}
	prices[FallbackModel] = Price{Input: 5 * Dollar, Output: 20 * Dollar}
	prices["with-fees"] = Price{Input: 3 * Dollar, Output: 15 * Dollar, Request: Cent,
		LongContext: &LongContextPrice{Above: 1000, Price: Price{Input: 6 * Dollar, Output: 30 * Dollar, Request: 2 * Cent}}}
	return prices, []string{"gpt-4.1", "claude-sonnet-4-5", "deepseek-v3.2", "with-fees", "not-in-the-table"},
		[]string{"", "gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-flash", "unknown-model"}
}

// declaredSearch is a web search tool a request declares, at the fee
// settledAs prices it at, with its
// reserve: an answer to it is charged its calls.
var declaredSearch = &serverTools{List: []serverTool{{Type: "web_search"}}, Reserve: Cent}

// An answer that ran as priced is charged by settle's fast path exactly as
// the general path charges it, and every other answer takes the general
// path: over answers at Priority or not, in every region, served by the
// request's model, another priced one, an unknown one or none, with the
// usage known or not and writes lost.
func TestBudgetSettleFastPathChargesAsTheGeneralPath(t *testing.T) {
	prices, models, served := settleCases()
	n := 0
	for _, model := range models {
		for _, by := range served {
			for _, priority := range []bool{false, true} {
				for _, geo := range []inferenceGeo{geoGlobal, geoUS, geoOther} {
					for _, known := range []bool{false, true} {
						for lost := range int64(3) {
							u := Usage{InputTokens: 1200, CachedInputTokens: 200, OutputTokens: 340, ranAtPriority: priority, ranIn: geo,
								ToolCalls: ToolCalls{WebSearch: int64(len(by) % 2)}} // calls counted, or none
							if by != "" {
								u.servedBy = hashModel(by)
							}
							fallback := model == "not-in-the-table"
							for _, tools := range []*serverTools{nil, declaredSearch} {
								fast := settledAs(t, prices, model, fallback, u, known, lost, false, tools)
								general := settledAs(t, prices, model, fallback, u, known, lost, true, tools)
								require.Equal(t, general, fast, "model %s served by %q, priority %v, geo %d, known %v, lost %d, tools %v", model, by, priority, geo, known, lost, tools)
								n++
							}
						}
					}
				}
			}
		}
	}
	assert.Equal(t, 5*5*2*3*2*3*2, n)
}

// The Retrier keeps an answer without its default Classifier only when
// DefaultClassifier would not retry it either, whatever the status and
// whether the caller's context is done.
func TestRetrierKeepsAnswerOnlyWhereDefaultClassifierWould(t *testing.T) {
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	require.True(t, r.defaultClassify)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, ctx := range []context.Context{context.Background(), done} {
		for status := 100; status < 600; status++ {
			resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}
			if !r.keepsAnswer(resp, nil) {
				continue
			}
			retry, _ := DefaultClassifier(ctx, resp, nil)
			assert.False(t, retry, "status %d", status)
		}
	}
	p := DefaultRetryPolicy()
	p.Classify = func(context.Context, *http.Response, error) (bool, error) { return true, nil }
	custom, err := NewRetrier(p)
	require.NoError(t, err)
	assert.False(t, custom.keepsAnswer(&http.Response{StatusCode: 200}, nil), "a Classifier of the caller's is always asked")
}

// A reservation the Budget admits straight into its own store's newest
// window (admitNewest) leaves the store as tryReserve's path leaves it,
// and one that does not fit is refused as that path refuses it: over a run
// of reservations and settlements that fills the Limit and frees it.
func TestBudgetReserveFastPathMatchesTryReserve(t *testing.T) {
	ctx := context.Background()
	cfg := BudgetConfig{Limit: 10 * Cent, MaxWait: -1, Prices: ExamplePrices()}
	fast, general := newTestBudget(t, cfg), newTestBudget(t, cfg)
	var held []Money
	var win string // the window the reservations went to
	refused := 0
	for i := range 200 {
		q := quote{price: &Price{}, reserve: Money(1+i*7919%13) * Cent / 4} // priced, as reserve takes a quote
		window, err := fast.reserve(ctx, &q)
		res, _, gerr := general.tryReserve(ctx, &q)
		require.NoError(t, gerr)
		require.Equal(t, res.OK, err == nil, "reservation %d of %v", i, q.reserve)
		if err != nil {
			refused++
		} else {
			require.Equal(t, res.Window, window)
			held, win = append(held, q.reserve), window
		}
		if i%3 == 2 && len(held) > 0 { // settle the oldest at a sixteenth of its reserve
			fast.ownStore().settleUnleased(win, held[0], held[0]/16)
			general.ownStore().settleUnleased(win, held[0], held[0]/16)
			held = held[1:]
		}
		fs, fh, _ := fast.Totals(ctx)
		gs, gh, _ := general.Totals(ctx)
		require.Equal(t, [2]Money{gs, gh}, [2]Money{fs, fh}, "after reservation %d", i)
	}
	assert.Greater(t, refused, 10, "the run fills the Limit")
	assert.Less(t, refused, 150, "and frees it")
}

// FuzzBudgetSettleFastPath checks settle's fast path against the general
// path over any usage an answer can report.
func FuzzBudgetSettleFastPath(f *testing.F) {
	f.Add(int64(1200), int64(200), int64(340), int64(0), false, uint8(0), uint8(0), uint8(0), true, uint8(0), false)
	f.Add(int64(9), int64(0), int64(7), int64(3), true, uint8(1), uint8(1), uint8(2), false, uint8(2), true)
	f.Add(int64(-5), int64(10), int64(1<<40), int64(1), false, uint8(2), uint8(3), uint8(4), true, uint8(1), false)
	f.Add(int64(1500), int64(0), int64(20), int64(0), false, uint8(0), uint8(3), uint8(0), true, uint8(0), false)
	f.Add(int64(800), int64(0), int64(20), int64(0), false, uint8(0), uint8(3), uint8(0), true, uint8(0), true)
	f.Add(int64(800), int64(0), int64(20), int64(2), false, uint8(0), uint8(0), uint8(0), true, uint8(0), false)
	prices, models, served := settleCases()
	f.Fuzz(func(t *testing.T, in, cached, out, tools int64, priority bool, geo, model, by uint8, known bool, lost uint8, declared bool) {
		u := Usage{InputTokens: in, CachedInputTokens: cached, OutputTokens: out, ToolCalls: ToolCalls{WebSearch: tools},
			ranAtPriority: priority, ranIn: inferenceGeo(geo % 3)}
		if name := served[int(by)%len(served)]; name != "" {
			u.servedBy = hashModel(name)
		}
		m := models[int(model)%len(models)]
		fallback := m == "not-in-the-table"
		var declare *serverTools
		if declared {
			declare = declaredSearch
		}
		fast := settledAs(t, prices, m, fallback, u, known, int64(lost%4), false, declare)
		general := settledAs(t, prices, m, fallback, u, known, int64(lost%4), true, declare)
		require.Equal(t, general, fast)
	})
}
