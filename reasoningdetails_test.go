package httpguard

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// xAI counts reasoning beside completion_tokens, in
// completion_tokens_details.reasoning_tokens. Its own total_tokens counts
// them (see TestBudgetChargesTokensOnlyTotalTokensCounts), but relays
// rewrite or drop it: LiteLLM sets total_tokens to prompt_tokens plus
// completion_tokens for xAI, and a stream's usage chunk may leave it out.
// A reasoning count above completion_tokens cannot be a part of it: the
// answer itself says the reasoning was billed beside it.
func TestBudgetChargesReasoningCompletionTokensCannotHold(t *testing.T) {
	grok := Price{Input: 3 * Dollar, Output: 15 * Dollar}
	// xAI bills 279 input tokens, and 6 completion tokens plus 89 of
	// reasoning as output.
	billed := grok.Cost(Usage{InputTokens: 279, OutputTokens: 95})
	for _, tc := range []struct{ name, contentType, answer string }{
		{"json, total rewritten", "application/json",
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":279,"completion_tokens":6,"total_tokens":285,` +
				`"completion_tokens_details":{"reasoning_tokens":89}}}`},
		{"json, no total", "application/json",
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":279,"completion_tokens":6,` +
				`"completion_tokens_details":{"reasoning_tokens":89,"audio_tokens":0}}}`},
		{"stream, total rewritten", "text/event-stream",
			"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
				"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":279,\"completion_tokens\":6,\"total_tokens\":285," +
				"\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":89}}}\n\n" +
				"data: [DONE]\n\n"},
		{"xai's own total", "application/json",
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":279,"completion_tokens":6,"total_tokens":374,` +
				`"completion_tokens_details":{"reasoning_tokens":89}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", tc.contentType)
				fmt.Fprint(w, tc.answer)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"grok-4": grok},
				OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", `{"model":"grok-4","max_tokens":1000,"messages":[]}`)
			assert.True(t, got.UsageKnown)
			assert.Equal(t, billed, got.Charged, "charged for usage %+v", got.Usage)
			assert.Equal(t, int64(95), got.Usage.OutputTokens)
		})
	}
	// OpenAI counts reasoning within completion_tokens: charged once.
	var u Usage
	var w wireUsage
	w.put(promptTokens, 279)
	w.put(completionTokens, 95)
	w.put(completionReasoningTokens, 89)
	assert.True(t, w.readUsage(&u))
	assert.Equal(t, int64(95), u.OutputTokens)
}
