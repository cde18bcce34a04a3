package httpguard

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A stream may report usage in several chunks (Gemini's OpenAI-compatible
// endpoint, in each): SDKs keep the last chunk's usage whole, and the
// cached part of its prompt, a discount, is the last one's. A last usage
// that names no cached part says none of its prompt was cached: the
// discount an earlier chunk named must not outlive it.
func TestBudgetDropsACachedCountALaterUsageChunkLeavesOut(t *testing.T) {
	price := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar}
	billed := price.Cost(Usage{InputTokens: 1000, OutputTokens: 50}) // the last chunk's usage, as the SDK reads it
	for _, tc := range []struct{ name, stream string }{
		{"details left out",
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":900}}}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":50}}\n\n" +
				"data: [DONE]\n\n"},
		{"deepseek's hit count left out",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1,\"prompt_cache_hit_tokens\":900}}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":50,\"prompt_tokens_details\":{\"audio_tokens\":0}}}\n\n" +
				"data: [DONE]\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, tc.stream)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": price}, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","max_tokens":1000,"stream":true,"messages":[]}`)
			assert.GreaterOrEqual(t, got.Charged, billed, "charged for usage %+v", got.Usage)
		})
	}
	// A later usage that names the cached part still sets it, smaller or
	// larger (see wireUsage.merge); one whose input is a placeholder below
	// the earlier count leaves the earlier reading's discount with it.
	var p, z wireUsage
	p.put(promptTokens, 1000)
	p.put(promptCachedTokens, 900)
	z.put(promptTokens, 0)
	z.put(completionTokens, 50)
	p.merge(&z)
	assert.Equal(t, int64(900), p.get(promptCachedTokens))
	var w, v wireUsage
	w.put(promptTokens, 1000)
	w.put(promptCachedTokens, 100)
	v.put(promptTokens, 1000)
	v.put(promptCachedTokens, 900)
	w.merge(&v)
	assert.Equal(t, int64(900), w.get(promptCachedTokens))
}

// A later usage that counts less input than an earlier one, but some
// (not a relay's placeholder 0), and names no cached part of it, says
// none of its prompt was cached, as SDKs read the last usage whole: the
// earlier chunk's discount must not apply to the larger count kept.
func TestBudgetDropsACachedCountALaterSmallerUsageLeavesOut(t *testing.T) {
	price := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar}
	billed := price.Cost(Usage{InputTokens: 500, OutputTokens: 50}) // the last chunk's usage, as the SDK reads it
	for _, tc := range []struct{ name, stream string }{
		{"chat",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":900}}}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":500,\"completion_tokens\":50}}\n\n" +
				"data: [DONE]\n\n"},
		{"deepseek's hit count",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1,\"prompt_cache_hit_tokens\":900}}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":500,\"completion_tokens\":50}}\n\n" +
				"data: [DONE]\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, tc.stream)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": price}, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","max_tokens":1000,"stream":true,"messages":[]}`)
			assert.GreaterOrEqual(t, got.Charged, billed, "charged for usage %+v", got.Usage)
		})
	}
	// The Responses API's cached input, likewise.
	var w, v wireUsage
	w.put(inputTokens, 1000)
	w.put(inputCachedTokens, 900)
	v.put(inputTokens, 500)
	v.put(outputTokens, 50)
	w.merge(&v)
	assert.False(t, w.has(inputCachedTokens))
}
