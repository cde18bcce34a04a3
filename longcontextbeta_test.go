package httpguard

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Anthropic bills a request that carries "anthropic-beta:
// context-1m-2025-08-07" and whose prompt passes 200,000 tokens at its
// long-context prices (Claude Sonnet 4.5: $6 input and $22.50 output per
// million, against $3 and $15). Priced by an entry without long_context, a
// $10 Limit let $14.77 be billed behind the proxy (found by a review of
// the proxy). Such a request is refused, as a tier the prices lack is,
// when its prompt may pass 200,000 tokens; one whose prompt cannot, or
// whose entry has long_context, is priced.
func TestBudgetRefusesTheLongContextBetaWithoutItsPrice(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	standard := Price{Input: 3 * Dollar, Output: 15 * Dollar}
	long := standard
	long.LongContext = &LongContextPrice{Above: 200_000, Price: Price{Input: 6 * Dollar, Output: 225 * Dollar / 10}}
	big := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 50_000) + `"}]}`
	small := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	post := func(b *Budget, body string, beta ...string) error {
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/messages", strings.NewReader(body))
		require.NoError(t, err)
		for _, v := range beta {
			req.Header.Add("Anthropic-Beta", v)
		}
		resp, err := api.client(t, b).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": standard}})
	for _, beta := range [][]string{{"context-1m-2025-08-07"}, {"prompt-caching-2024-07-31, CONTEXT-1M-2025-08-07"}, {"files-api-2025-04-14", "context-1m-2025-08-07"}} {
		err := post(b, big, beta...)
		require.ErrorIs(t, err, ErrUnknownModel, "%q", beta)
		assert.ErrorContains(t, err, "long_context")
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	require.NoError(t, post(b, small, "context-1m-2025-08-07"), "a prompt that cannot pass 200,000 tokens")
	require.NoError(t, post(b, big), "no long context asked for: Anthropic refuses a prompt past 200,000 tokens")
	require.NoError(t, post(b, big, "prompt-caching-2024-07-31"))

	// Server tools' results are input too: a prompt below 200,000 tokens
	// whose searches may take it past.
	searching := `{"model":"claude-sonnet-4-5","max_tokens":1000,"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}],` +
		`"messages":[{"role":"user","content":"` + strings.Repeat("word ", 36_000) + `"}]}`
	tools := BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": standard}, ToolPrices: map[string]Money{"web_search": Cent}, ToolResultReserve: 10_000}
	b = newTestBudget(t, tools)
	err := post(b, searching, "context-1m-2025-08-07")
	require.ErrorIs(t, err, ErrUnknownModel, "prompt and search results may pass 200,000 tokens")
	assert.ErrorContains(t, err, "long_context")

	// A long_context that starts past 200,000 tokens leaves some unpriced.
	late := long
	late.LongContext = &LongContextPrice{Above: 300_000, Price: long.LongContext.Price}
	b = newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": late}})
	require.ErrorIs(t, post(b, big, "context-1m-2025-08-07"), ErrUnknownModel)
	assert.Equal(t, 3, int(api.hits.Load()))

	b = newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": long}})
	require.NoError(t, post(b, big, "context-1m-2025-08-07"), "an entry with long_context prices it")
	tools.Prices = PriceTable{"claude-sonnet-4-5": long}
	require.NoError(t, post(newTestBudget(t, tools), searching, "context-1m-2025-08-07"))
	assert.Equal(t, 5, int(api.hits.Load()))
}

// net/http writes a header key set in the map directly as it is
// ("anthropic-beta"), and Anthropic reads header names in any case (HTTP/2
// sends them all in lower case): such a key asks for the long context as
// the canonical one does, and was not looked at.
func TestBudgetReadsTheLongContextBetaUnderAnyKeyCase(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	standard := Price{Input: 3 * Dollar, Output: 15 * Dollar}
	big := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 50_000) + `"}]}`
	b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": standard}})
	for _, key := range []string{"anthropic-beta", "ANTHROPIC-BETA"} {
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/messages", strings.NewReader(big))
		require.NoError(t, err)
		req.Header[key] = []string{"context-1m-2025-08-07"}
		resp, err := api.client(t, b).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel, key)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
}

// Was a bug: LiteLLM forwards an x-pass- header to the provider with the
// prefix stripped, whatever the proxy's settings, and Portkey its
// x-portkey-anthropic-beta as anthropic-beta: "x-pass-anthropic-beta:
// context-1m-2025-08-07" got a prompt past 200,000 tokens billed at
// long-context prices, twice the input price the Budget charged. It is now
// read as anthropic-beta is.
func TestBudgetReadsTheLongContextBetaAGatewayForwards(t *testing.T) {
	standard := Price{Input: 3 * Dollar, Output: 15 * Dollar}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		// A gateway forwarding the flag, and Anthropic billing the long
		// context for it: twice the input price past 200,000 tokens.
		p := standard
		for _, k := range []string{"Anthropic-Beta", "X-Pass-Anthropic-Beta", "X-Portkey-Anthropic-Beta"} {
			if strings.Contains(r.Header.Get(k), "context-1m") && len(body) > 200_000 {
				p.Input *= 2
			}
		}
		billed.Add(int64(Money(len(body)) * p.Input / 1_000_000))
		answerUsage(len(body), 1)(w, r, body)
	})
	big := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 50_000) + `"}]}`
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": standard}})
	for _, key := range []string{"X-Pass-Anthropic-Beta", "X-Portkey-Anthropic-Beta", "x-pass-anthropic-beta"} {
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/messages", strings.NewReader(big))
		require.NoError(t, err)
		req.Header[key] = []string{"context-1m-2025-08-07"}
		resp, err := api.client(t, b).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel, key)
		assert.ErrorContains(t, err, "long_context", key)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	assert.Zero(t, billed.Load())
}
