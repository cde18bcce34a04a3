package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fallbackPrices prices the models of Anthropic's server-side fallback
// tests: a refusing model and its fallback.
var fallbackPrices = PriceTable{"claude-fable-5": {Input: 5 * Dollar, Output: 25 * Dollar}, "claude-opus-4-8": {Input: 5 * Dollar, Output: 20 * Dollar}}

// fallbackBody is a request of max_tokens 64 to claude-fable-5 with
// fallbacks.
func fallbackBody(fallbacks string) string {
	return `{"model":"claude-fable-5","max_tokens":64,` + fallbacks + `"messages":[{"role":"user","content":"hi"}]}`
}

// reservedFor is what a Budget under fallbackPrices reserves for body,
// sent to path.
func reservedFor(t *testing.T, path, body string) Money {
	t.Helper()
	var r Money
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: fallbackPrices, OnSettle: func(s Settlement) { r = s.Reserved }})
	api := newFakeAPI(t, answerBound)
	resp, err := api.client(t, b).Post(api.srv.URL+path, "application/json", strings.NewReader(body))
	require.NoError(t, err, body)
	resp.Body.Close()
	return r
}

// hopCost is what one attempt of body costs at most at price p, writing
// output tokens.
func hopCost(body string, p Price, output int64) Money {
	return p.Cost(Usage{InputTokens: int64(len(body)), OutputTokens: output})
}

// Was a bug: an entry of Anthropic's server-side fallbacks (beta
// server-side-fallback, anthropic-sdk-go's BetaFallbackParam) may set its
// own max_tokens, "in place of the request's": the Budget reserved the
// fallback model at the request's max_tokens, so that a request of
// max_tokens 64 reserved $0.0023 and its fallback could write 32,000
// tokens ($0.64) past the Limit. A fallback's own max_tokens bounds its
// output.
func TestBudgetReservesAFallbackEntrysOwnMaxTokens(t *testing.T) {
	fable, opus := fallbackPrices["claude-fable-5"], fallbackPrices["claude-opus-4-8"]
	own := fallbackBody(`"fallbacks":[{"model":"claude-opus-4-8","max_tokens":32000}],`)
	assert.Equal(t, hopCost(own, fable, 64)+hopCost(own, opus, 32_000), reservedFor(t, "/v1/messages", own),
		"the refusing model's 64 tokens, and the fallback's own 32,000")
	for _, same := range []string{`"fallbacks":[{"model":"claude-opus-4-8"}],`, `"fallbacks":[{"model":"claude-opus-4-8","max_tokens":null}],`,
		`"fallbacks":[{"model":"claude-opus-4-8","max_tokens":10}],`} {
		body := fallbackBody(same)
		assert.Equal(t, hopCost(body, fable, 64)+hopCost(body, opus, 64), reservedFor(t, "/v1/messages", body), "the request's max_tokens: %s", same)
	}

	b := newTestBudget(t, BudgetConfig{Limit: Dollars(0.5), Prices: fallbackPrices})
	api := newFakeAPI(t, answerBound)
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(own))
	var refused *BudgetError
	require.ErrorAs(t, err, &refused, "$0.64 of output does not fit $0.50")
	assert.EqualValues(t, 32_000, refused.OutputTokens)
	assert.Zero(t, api.hits.Load())

	_, err = api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json",
		strings.NewReader(fallbackBody(`"fallbacks":[{"model":"claude-opus-4-8","max_tokens":"many"}],`)))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, `"max_tokens"`)
}

// Was a bug: Anthropic's server-side fallbacks bill every model they try,
// the one that refused too (a refusal is an answer, with its usage; the
// answer's usage.iterations lists each attempt): the Budget reserved the
// dearest model alone, as for a relay's fallbacks, of which one model
// serves and is billed. A request to a Messages API reserves each.
func TestBudgetReservesEveryModelOfAnthropicsFallbacks(t *testing.T) {
	fable, opus := fallbackPrices["claude-fable-5"], fallbackPrices["claude-opus-4-8"]
	body := fallbackBody(`"fallbacks":[{"model":"claude-opus-4-8"},{"model":"claude-fable-5"}],`)
	assert.Equal(t, 2*hopCost(body, fable, 64)+hopCost(body, opus, 64), reservedFor(t, "/v1/messages", body))
	assert.Equal(t, hopCost(body, fable, 64), reservedFor(t, "/api/v1/chat/completions", body), "OpenRouter's: the dearest")
}

// Was a bug: an entry of Anthropic's server-side fallbacks may set its own
// speed, and "speed": "fast" bills its model at fast-mode prices (six
// times standard on Opus 4.6), but the Budget reserved and settled the
// entry at the request's standard prices. A fast entry is priced only
// when the request runs fast too (its "@fast" prices then price every
// model); otherwise it is refused, unsent.
func TestBudgetRefusesAFastFallbackEntryOfAStandardRequest(t *testing.T) {
	prices := PriceTable{"claude-fable-5": fallbackPrices["claude-fable-5"], "claude-opus-4-8": fallbackPrices["claude-opus-4-8"],
		"claude-fable-5@fast": {Input: 30 * Dollar, Output: 150 * Dollar}, "claude-opus-4-8@fast": {Input: 30 * Dollar, Output: 120 * Dollar}}
	for _, fallbacks := range []string{`"fallbacks":[{"model":"claude-opus-4-8","speed":"fast"}],`,
		`"fallbacks":[{"model":"claude-opus-4-8","Speed":"fast"}],`, `"fallbacks":[{"model":"claude-opus-4-8","speed":"turbo"}],`} {
		api := newFakeAPI(t, answerBound)
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices})
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(fallbackBody(fallbacks)))
		require.ErrorIs(t, err, ErrUnknownModel, fallbacks)
		assert.ErrorContains(t, err, `"speed"`, fallbacks)
		assert.Zero(t, api.hits.Load(), "refused unsent: %s", fallbacks)
	}
	for _, fallbacks := range []string{`"fallbacks":[{"model":"claude-opus-4-8","speed":"standard"}],`,
		`"fallbacks":[{"model":"claude-opus-4-8","speed":null}],`} {
		body := fallbackBody(fallbacks)
		assert.Equal(t, hopCost(body, prices["claude-fable-5"], 64)+hopCost(body, prices["claude-opus-4-8"], 64),
			reservedFor(t, "/v1/messages", body), "a standard entry: %s", fallbacks)
	}
	// A request that runs fast prices its fast entries at "@fast" prices.
	body := `{"model":"claude-fable-5","speed":"fast","max_tokens":64,"fallbacks":[{"model":"claude-opus-4-8","speed":"fast"}],"messages":[{"role":"user","content":"hi"}]}`
	var reserved Money
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { reserved = s.Reserved }})
	resp, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, hopCost(body, prices["claude-fable-5@fast"], 64)+hopCost(body, prices["claude-opus-4-8@fast"], 64), reserved)
}

// "fallbacks": "default" leaves Anthropic to pick the fallback models: it
// is refused, unsent, with an error that says so, not one that calls the
// body ambiguous.
func TestBudgetRefusesFallbacksTheServerPicks(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: fallbackPrices})
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(fallbackBody(`"fallbacks":"default",`)))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, `"fallbacks" is "default", which leaves the server to pick the models`)
	assert.NotErrorIs(t, err, errAmbiguousRequest)
	assert.Zero(t, api.hits.Load())
}

// Was a bug: LiteLLM runs a fallback given as an object with its fields
// over the request's (kwargs.update), so an entry's n or
// max_completion_tokens runs: a chat request of n 1 reserved one choice
// where its fallback could write eight. An entry's n and
// max_completion_tokens bound its run, as its max_tokens does.
func TestBudgetReservesAFallbackEntrysOwnNAndMaxCompletionTokens(t *testing.T) {
	body := func(n, fallbacks string) string {
		return `{"model":"claude-fable-5","max_tokens":64,"n":` + n + `,` + fallbacks + `"messages":[{"role":"user","content":"hi"}]}`
	}
	path := "/v1/chat/completions"
	entry := body("1", `"fallbacks":[{"model":"claude-opus-4-8","n":8}],`)
	assert.GreaterOrEqual(t, reservedFor(t, path, entry), hopCost(entry, fallbackPrices["claude-opus-4-8"], 8*64),
		"the fallback's own n of 8: eight choices of 64 tokens")
	// (a longer body, more input tokens reserved: at least as much)
	assert.GreaterOrEqual(t, reservedFor(t, path, body("1", `"fallbacks":[{"model":"claude-opus-4-8","max_completion_tokens":32000}],`)),
		reservedFor(t, path, body("1", `"fallbacks":[{"model":"claude-opus-4-8","max_tokens":32000}],`)),
		"max_completion_tokens bounds the entry's output as max_tokens does")
}
