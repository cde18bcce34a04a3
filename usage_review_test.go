package httpguard

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Some OpenAI-compatible APIs leave reasoning tokens out of
// completion_tokens, though they bill them as output: Gemini's
// OpenAI-compatible endpoint (usage {"prompt_tokens":9,
// "completion_tokens":1,"total_tokens":103}, the thoughts only in the
// total) and xAI (reasoning_tokens beside completion_tokens). total_tokens
// says how many tokens were billed: the Budget must charge them all, or
// every reasoning answer bills past what it was charged.
func TestBudgetChargesTokensOnlyTotalTokensCounts(t *testing.T) {
	gemini := ExamplePrices()["gemini-2.5-flash"] // $0.30 in, $2.50 out per million
	for _, tc := range []struct {
		name, contentType, answer string
		want                      Money
	}{
		{"gemini json", "application/json",
			`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"1"},"finish_reason":"length"}],` +
				`"usage":{"completion_tokens":1,"prompt_tokens":9,"total_tokens":103}}`,
			// 9 input tokens, 94 output tokens (1 visible, 93 thoughts).
			9*gemini.Input/1_000_000 + 94*gemini.Output/1_000_000},
		{"gemini stream, usage in every chunk", "text/event-stream",
			"data: {\"choices\":[{\"delta\":{\"content\":\"1\",\"role\":\"assistant\"},\"index\":0}],\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":9,\"total_tokens\":103}}\n\n" +
				"data: {\"choices\":[{\"delta\":{\"content\":\", 2\",\"role\":\"assistant\"},\"finish_reason\":\"stop\",\"index\":0}],\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":9,\"total_tokens\":105}}\n\n" +
				"data: [DONE]\n\n",
			9*gemini.Input/1_000_000 + 96*gemini.Output/1_000_000},
		{"xai reasoning beside completion", "application/json",
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":335,` +
				`"completion_tokens_details":{"reasoning_tokens":320}}}`,
			10*gemini.Input/1_000_000 + 325*gemini.Output/1_000_000},
		{"openai, total agrees", "application/json",
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":325,"total_tokens":335,` +
				`"completion_tokens_details":{"reasoning_tokens":320}}}`,
			10*gemini.Input/1_000_000 + 325*gemini.Output/1_000_000},
		{"responses", "application/json",
			`{"object":"response","output":[],"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":335}}`,
			10*gemini.Input/1_000_000 + 325*gemini.Output/1_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", tc.contentType)
				fmt.Fprint(w, tc.answer)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"gemini-2.5-flash": gemini},
				OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", `{"model":"gemini-2.5-flash","max_tokens":1000,"messages":[]}`)
			assert.True(t, got.UsageKnown)
			assert.Equal(t, tc.want, b.Spent(), "charged %v for usage %+v", got.Charged, got.Usage)
		})
	}
}

// Anthropic's message_delta usage is cumulative: a count it repeats is
// never below what message_start said. Anthropic-compatible relays fill the
// counts they do not track with 0 (message_delta
// {"input_tokens":0,"output_tokens":500}) while they bill the input
// message_start reported: a placeholder must not erase a count, or the
// prompt is charged nothing.
func TestBudgetKeepsCountsAPlaceholderZeroWouldErase(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $0.30 cache reads, $15 out per million
	stream := "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5",` +
		`"usage":{"input_tokens":2000,"cache_read_input_tokens":10000,"output_tokens":1}}}` + "\n\n" +
		"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":0,"cache_read_input_tokens":0,"output_tokens":500}}` + "\n\n" +
		"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, stream)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}})
	readThrough(t, api, b, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[]}`, "Anthropic-Version", "2023-06-01")

	// What message_start reported, with message_delta's output tokens.
	want := (2000*sonnet.Input + 10000*sonnet.CachedInput + 500*sonnet.Output) / 1_000_000
	assert.Equal(t, want, b.Spent())
}

// Relays that serve Anthropic's Messages API (GitHub Copilot's, among
// others) end its stream as OpenAI's, with a "data: [DONE]" after
// message_stop. It carries nothing an SDK reads: the usage the stream
// reported is still what it costs, not the whole reservation.
func TestBudgetChargesTheUsageOfAStreamThatSaysDONEAfterItsEnd(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"]
	for name, done := range map[string]string{"LF": "data: [DONE]\n\n", "CRLF": "data: [DONE]\r\n\r\n", "no newline": "data: [DONE]"} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, anthropicStream+done)
			})
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}})
			readThrough(t, api, b, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[]}`, "Anthropic-Version", "2023-06-01")

			// anthropicStream: 25 input tokens, 10 cache reads, 15 output tokens.
			want := (25*sonnet.Input + 10*sonnet.CachedInput + 15*sonnet.Output) / 1_000_000
			assert.Equal(t, want, b.Spent())
		})
	}
}
