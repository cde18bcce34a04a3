package httpguard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Relays that serve Claude through OpenAI's chat completions report its
// prompt-cache writes in OpenAI-style usage: LiteLLM adds
// cache_creation_input_tokens (and prompt_tokens_details.cache_creation_tokens)
// beside prompt_tokens, which counts them; OpenRouter reports
// prompt_tokens_details.cache_write_tokens. Anthropic bills the writes at
// its cache-write price, 1.25 times the input price: charged as plain
// input, every cached prompt bills past what the Budget charged.
func TestBudgetChargesCacheWritesReportedInOpenAIStyleUsage(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $3.75 cache writes, $15 out per million
	// 20,000 prompt tokens, 16,000 of them written to the cache; 100 output tokens.
	billed := (4_000*sonnet.Input + 16_000*sonnet.CacheWrite + 100*sonnet.Output) / 1_000_000
	for _, tc := range []struct{ name, contentType, answer string }{
		{"litellm json", "application/json",
			`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":20000,"completion_tokens":100,"total_tokens":20100,` +
				`"prompt_tokens_details":{"cached_tokens":0,"cache_creation_tokens":16000},` +
				`"cache_creation_input_tokens":16000,"cache_read_input_tokens":0}}`},
		{"litellm stream", "text/event-stream",
			"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n" +
				"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":20000,\"completion_tokens\":100,\"total_tokens\":20100," +
				"\"prompt_tokens_details\":{\"cached_tokens\":0},\"cache_creation_input_tokens\":16000,\"cache_read_input_tokens\":0}}\n\n" +
				"data: [DONE]\n\n"},
		{"openrouter json", "application/json",
			`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":20000,"completion_tokens":100,"total_tokens":20100,` +
				`"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":16000,"audio_tokens":0}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", tc.contentType)
				fmt.Fprint(w, tc.answer)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet},
				OnSettle: func(s Settlement) { got = s }})
			body := `{"model":"claude-sonnet-4-5","max_tokens":100,"stream":` + fmt.Sprint(tc.contentType == "text/event-stream") +
				`,"messages":[{"role":"user","content":"` + strings.Repeat("x", 80_000) + `"}]}`
			readThrough(t, api, b, "/v1/chat/completions", body)
			require.True(t, got.UsageKnown)
			assert.GreaterOrEqual(t, b.Spent(), billed, "charged %v for usage %+v; the provider billed %v", got.Charged, got.Usage, billed)
		})
	}
}

// LiteLLM says which of Claude's cache writes went to the one-hour cache,
// which Anthropic bills at twice the input price (against 1.25 times), in
// prompt_tokens_details.cache_creation_token_details.
func TestBudgetChargesOneHourCacheWritesLiteLLMReports(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $3.75 cache writes, $6 one-hour cache writes, $15 out
	billed := (4_000*sonnet.Input + 6_000*sonnet.CacheWrite + 10_000*sonnet.CacheWrite1h + 100*sonnet.Output) / 1_000_000
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":20000,"completion_tokens":100,"total_tokens":20100,`+
			`"prompt_tokens_details":{"cached_tokens":0,"cache_creation_tokens":16000,`+
			`"cache_creation_token_details":{"ephemeral_5m_input_tokens":6000,"ephemeral_1h_input_tokens":10000}},`+
			`"cache_creation_input_tokens":16000,"cache_read_input_tokens":0}}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"`+
		strings.Repeat("x", 80_000)+`"}]}`)
	require.True(t, got.UsageKnown)
	assert.Equal(t, Usage{InputTokens: 20_000, CacheWriteInputTokens: 16_000, CacheWrite1hInputTokens: 10_000, OutputTokens: 100}, got.Usage)
	assert.GreaterOrEqual(t, got.Charged, billed)
}

// A stream cut after it reported usage was charged its reservation, even
// when the usage it had reported already cost more: an answer longer than
// OutputReserve (no max_tokens), or a prompt that server tools' results
// grew past the body's bytes. Those tokens were billed; the docs promise
// an attempt that costs more than its reservation is charged in full.
func TestBudgetChargesTheUsageACutStreamReportedWhenItExceedsTheReservation(t *testing.T) {
	for _, tc := range []struct{ name, path, body, stream string }{
		{"openai, no max_tokens, cut before [DONE]", "/v1/chat/completions",
			`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"write a book"}]}`,
			"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"...\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
				"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":50000,\"total_tokens\":50020}}\n\n"},
		{"anthropic, search results in the prompt, cut before message_stop", "/v1/messages",
			`{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"search"}]}`,
			"event: message_start\n" +
				`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":20,"output_tokens":1}}}` + "\n\n" +
				"event: message_delta\n" +
				`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":90000,"output_tokens":100}}` + "\n\n"},
		{"anthropic, search results in the prompt, then an error event", "/v1/messages",
			`{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"search"}]}`,
			"event: message_start\n" +
				`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":20,"output_tokens":1}}}` + "\n\n" +
				"event: message_delta\n" +
				`data: {"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"input_tokens":90000,"output_tokens":100}}` + "\n\n" +
				"event: error\n" + `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` + "\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, tc.stream) // and the stream ends, without its terminal event
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, tc.path, tc.body)
			require.Equal(t, b.Spent(), got.Charged)
			reported := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50000})
			if strings.Contains(tc.path, "messages") {
				reported = testPrices["m"].Cost(Usage{InputTokens: 90000, OutputTokens: 100})
			}
			assert.Greater(t, reported, got.Reserved, "the usage reported costs more than the reservation")
			assert.GreaterOrEqual(t, got.Charged, reported, "charged %v, reserved %v; the stream reported usage costing %v", got.Charged, got.Reserved, reported)
		})
	}
}

// OpenAI's chat completion puts usage before service_tier and
// system_fingerprint: an answer whose connection broke after its usage was
// charged its reservation, even when that usage cost more (no max_tokens,
// an answer longer than OutputReserve), as a cut stream was.
func TestBudgetChargesTheUsageOfAJSONAnswerCutAfterItWhenItExceedsTheReservation(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"..."},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":20,"completion_tokens":50000,"total_tokens":50020},"service_tier":"default","system_finger`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks before the answer's end
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
	resp, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"write a book"}]}`))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Error(t, err, "the connection broke")
	reported := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50000})
	assert.GreaterOrEqual(t, got.Charged, reported, "charged %v, reserved %v; the answer reported usage costing %v", got.Charged, got.Reserved, reported)
}

// A Responses stream's usage comes in response.completed, whose response
// object carries the whole answer: a long answer's object is long. It was
// charged the reservation past 256 KiB, although a request without
// max_output_tokens reserves only OutputReserve and a long answer costs
// more: now its usage is read as it passes, whatever the object's length.
func TestBudgetChargesTheUsageOfALongResponsesStream(t *testing.T) {
	const output = 80_000 // tokens: about 320 KiB of text
	text := strings.Repeat("word ", output)
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\","+
			"\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":%q}]}],"+
			"\"usage\":{\"input_tokens\":12,\"output_tokens\":%d,\"total_tokens\":%d}}}\n\n", text, output, output+12)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/responses", `{"model":"m","stream":true,"input":"write a long story"}`)
	billed := testPrices["m"].Cost(Usage{InputTokens: 12, OutputTokens: output})
	require.Greater(t, billed, got.Reserved, "the answer costs more than its reservation")
	assert.True(t, got.UsageKnown)
	assert.Equal(t, billed, got.Charged)
}

// Was a bug: the tokens of a request for many candidates with a huge
// max_tokens saturate at the largest Money (costSum), and the fees per
// request added to that overflowed it: a worst case of about -$9.2
// billion. A conforming store refuses a negative amount, but the Budget,
// which compared it with the room left, waited for room (MaxWait) rather
// than refuse at once, and said the request needed -$9223244036.85; a
// store that held it would have made room with it.
func TestAReservationPastMoneysRangeIsNeverNegative(t *testing.T) {
	sonar := Price{Input: Dollar, Output: 600 * Dollar, Request: 5 * Cent / 10} // $0.005 per request
	for _, p := range []Price{sonar.times(maxUsageTokens), {Input: maxPrice, Output: maxPrice, Request: maxToolPrice}} {
		assert.Greater(t, p.reserve(maxUsageTokens, maxUsageTokens, 0, maxUsageTokens), MaxBudgetLimit)
	}

	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: MaxBudgetLimit, MaxWait: time.Hour, Prices: PriceTable{"sonar": sonar}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"sonar","n":1000000000,"max_tokens":1000000000,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := api.client(t, b).Do(req)
	if resp != nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, ErrBudgetExceeded, "refused at once: no room will ever come")
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Greater(t, be.Need, MaxBudgetLimit)
	assert.NotContains(t, err.Error(), "-$")
	assert.Zero(t, api.hits.Load())
}
