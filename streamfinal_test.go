package httpguard

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A stream's final usage comes after its content (OpenAI's usage chunk,
// Anthropic's message_delta) or in the terminal Responses event. A stream
// that ends without it carried only a part of what was billed (Anthropic's
// message_start placeholder of 1 output token, a usage in
// response.in_progress): it is charged its reservation, not that part.
// A chat stream's final usage comes with or after its last output, so a
// usage before output (a relay's on the first chunk) is a part too; chunks
// without output (Azure's annotations) may follow it (see
// sseScanner.usageStale). Found by an adversarial hunt: a relay whose
// message_delta lost its usage (as cc-switch's did before
// farion1231/cc-switch#2485) let the provider bill 6.6 times the Limit.

const (
	finalAnthBody = `{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	finalRespBody = `{"model":"m","max_output_tokens":100,"stream":true,"input":"hello"}`
	finalChatBody = `{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
)

func namedEvent(typ, data string) string { return "event: " + typ + "\ndata: " + data + "\n\n" }

func anthStart(in, out int) string {
	return namedEvent("message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":"msg","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":%d,"output_tokens":%d}}}`, in, out))
}

func anthText(s string) string {
	return namedEvent("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, s))
}

var (
	anthPing = namedEvent("ping", `{"type":"ping"}`)
	anthStop = namedEvent("message_stop", `{"type":"message_stop"}`)
)

func chatDelta(s string) string {
	return fmt.Sprintf("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}],\"usage\":null}\n\n", s)
}

const zeroChatUsage = `{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`

func chatChunk(choice, usage string) string {
	return "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[" + choice + "],\"usage\":" + usage + "}\n\n"
}

func respEvent(typ, usage string) string {
	return namedEvent(typ, fmt.Sprintf(`{"type":%q,"response":{"id":"r","object":"response","status":"in_progress","model":"m","output":[],"usage":%s}}`, typ, usage))
}

// settleStream sends body to path through a Budget, over a server that
// streams pieces, reads the answer whole and returns its settlement.
func settleStream(t *testing.T, path, body string, pieces ...string) Settlement {
	t.Helper()
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, p := range pieces {
			io.WriteString(w, p)
			w.(http.Flusher).Flush()
		}
	})
	var got []Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = append(got, s) }})
	resp, err := api.client(t, b).Post(api.srv.URL+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Len(t, got, 1)
	return got[0]
}

func TestBudgetStreamWithoutItsFinalUsageIsChargedItsReservation(t *testing.T) {
	for name, c := range map[string]struct {
		path, body string
		pieces     []string
	}{
		"anthropic, message_delta without usage": {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthText("ninety tokens"),
			namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null}}`), anthStop}},
		"anthropic, usage inside delta": {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthText("ninety tokens"),
			namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","usage":{"output_tokens":90}}}`), anthStop}},
		"anthropic, no message_delta": {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthText("ninety tokens"), anthStop}},
		"chat, usage on the first chunk only": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			chatDelta("ninety tokens"), chatChunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, "null"), "data: [DONE]\n\n"}},
		"chat, a tool call after the usage": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"role":"assistant"},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}`),
			chatChunk(`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}`, "null"),
			"data: [DONE]\n\n"}},
		"chat, escaped delta key": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			chatChunk(`{"index":0,"\u0064elta":{"Content":"ninety tokens"},"finish_reason":null}`, "null"), "data: [DONE]\n\n"}},
		// A relay that fills every chunk's usage with zeros (a default
		// usage object) says nothing of the output the chunk carries.
		"chat, zero usage on the output chunks": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			chatChunk(`{"index":0,"delta":{"content":"ninety"},"finish_reason":null}`, zeroChatUsage),
			chatChunk(`{"index":0,"delta":{"content":" tokens"},"finish_reason":null}`, zeroChatUsage),
			chatChunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, zeroChatUsage), "data: [DONE]\n\n"}},
		"chat, output in a repeated choices": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ninety tokens\"}}],\"choices\":[],\"usage\":null}\n\n", "data: [DONE]\n\n"}},
		"completions, usage on the first chunk only": {"/v1/completions", `{"model":"m","max_tokens":100,"stream":true,"prompt":"hello"}`, []string{
			chatChunk(`{"index":0,"text":"","finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			chatChunk(`{"index":0,"text":"ninety tokens","finish_reason":null}`, "null"), "data: [DONE]\n\n"}},
		"responses, usage in in_progress only": {"/v1/responses", finalRespBody, []string{
			respEvent("response.in_progress", `{"input_tokens":20,"output_tokens":0,"total_tokens":20}`),
			namedEvent("response.completed", `{"type":"response.completed","response":{"id":"r","object":"response","status":"completed","model":"m","output":[]}}`)}},
	} {
		t.Run(name, func(t *testing.T) {
			s := settleStream(t, c.path, c.body, c.pieces...)
			assert.False(t, s.UsageKnown)
			assert.Equal(t, s.Reserved, s.Charged, "the reservation, which bounds what was billed")
		})
	}
}

// The final usage itself is read as before, pings anywhere included.
func TestBudgetStreamWithItsFinalUsageIsChargedIt(t *testing.T) {
	final := namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":90}}`)
	for name, c := range map[string]struct {
		path, body string
		pieces     []string
	}{
		"anthropic":                         {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthPing, anthText("ninety tokens"), final, anthStop}},
		"anthropic, a ping after the delta": {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthText("ninety tokens"), final, anthPing, anthStop}},
		"responses": {"/v1/responses", finalRespBody, []string{
			respEvent("response.in_progress", `{"input_tokens":20,"output_tokens":0,"total_tokens":20}`),
			respEvent("response.completed", `{"input_tokens":20,"output_tokens":90,"total_tokens":110}`)}},
		// Azure's asynchronous filter: an annotation chunk after the usage.
		"chat, azure's annotation after the usage": {"/v1/chat/completions", finalChatBody, []string{chatDelta("ninety tokens"),
			"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"delta\":{}}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":90,\"total_tokens\":110}}\n\n",
			"data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[{\"index\":0,\"finish_reason\":null,\"content_filter_results\":{},\"content_filter_offsets\":{\"check_offset\":5,\"start_offset\":0,\"end_offset\":5}}]}\n\n",
			"data: [DONE]\n\n"}},
		// DeepSeek's and OpenRouter's: the usage in the last chunk, with
		// (empty) output, then only chunks without output.
		"chat, the usage with the last output": {"/v1/chat/completions", finalChatBody, []string{chatDelta("ninety tokens"),
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}`, `{"prompt_tokens":20,"completion_tokens":90,"total_tokens":110}`),
			chatChunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, "null"),
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":null,"refusal":null}}`, "null"), "data: [DONE]\n\n"}},
		// A zero usage on a chunk without output, after the final one.
		"chat, a zero usage after the usage": {"/v1/chat/completions", finalChatBody, []string{chatDelta("ninety tokens"),
			chatChunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, `{"prompt_tokens":20,"completion_tokens":90,"total_tokens":110}`),
			"data: {\"choices\":[],\"usage\":" + zeroChatUsage + "}\n\n", "data: [DONE]\n\n"}},
		// vLLM's continuous usage: every chunk carries the usage so far.
		"chat, usage on every chunk": {"/v1/chat/completions", finalChatBody, []string{
			chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`),
			chatChunk(`{"index":0,"delta":{"content":"ninety"},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":45,"total_tokens":65}`),
			chatChunk(`{"index":0,"delta":{"content":" tokens"},"finish_reason":"stop"}`, `{"prompt_tokens":20,"completion_tokens":90,"total_tokens":110}`),
			"data: [DONE]\n\n"}},
		"chat": {"/v1/chat/completions", finalChatBody, []string{chatDelta("ninety tokens"),
			"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":90,\"total_tokens\":110}}\n\n", "data: [DONE]\n\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			s := settleStream(t, c.path, c.body, c.pieces...)
			assert.True(t, s.UsageKnown)
			assert.Equal(t, testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 90}), s.Charged)
		})
	}
}

// Against a Limit: the relay whose message_delta carries no usage no
// longer lets the provider bill past it.
func TestBudgetLimitHoldsAgainstARelayThatDropsTheFinalUsage(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, anthStart(20, 1)+anthText("ninety tokens")+
			namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null}}`)+anthStop)
		billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 90})))
	})
	limit := Dollar / 1000
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	sendUntilRefused(t, api.client(t, b), api.srv.URL+"/v1/messages", finalAnthBody, 50)
	assert.LessOrEqual(t, Money(billed.Load()), limit, "billed by the provider, under a Limit of %v (spent %v)", limit, b.Spent())
}

// The same against a relay whose chat usage came on the first chunk only.
func TestBudgetLimitHoldsAgainstARelayWhoseChatUsageComesFirst(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chatChunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`, `{"prompt_tokens":20,"completion_tokens":0,"total_tokens":20}`)+
			chatDelta("ninety")+chatDelta(" tokens")+chatChunk(`{"index":0,"delta":{},"finish_reason":"stop"}`, "null")+"data: [DONE]\n\n")
		billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 90})))
	})
	limit := Dollar / 1000
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	sendUntilRefused(t, api.client(t, b), api.srv.URL+"/v1/chat/completions", finalChatBody, 50)
	assert.LessOrEqual(t, Money(billed.Load()), limit, "billed by the provider, under a Limit of %v (spent %v)", limit, b.Spent())
}

// A Responses stream that lists its web_search_call items in
// response.output_item.done events, and whose terminal response lists
// fewer ("output": [], as some bridges send: litellm#32724, vllm#30223),
// was charged the calls that output listed: none, while the provider bills
// every search. Its calls are now unknown, and the declared tool's
// reservation is charged; against a Limit the provider no longer bills
// past it.
func TestBudgetLimitHoldsAgainstAResponsesStreamWhoseOutputListsFewerItems(t *testing.T) {
	const fee = Cent
	call := `{"type":"web_search_call","id":"ws","status":"completed","action":{"type":"search","query":"q"}}`
	body := `{"model":"m","max_output_tokens":100,"stream":true,"input":"hello","tools":[{"type":"web_search"}],"max_tool_calls":5}`
	for name, output := range map[string]string{
		"output []":           `[]`,
		"output lists one":    `[` + call + `]`,
		"output lists all":    `[` + call + `,` + call + `,` + call + `]`,
		"output of a message": `[{"type":"message","id":"m","role":"assistant","content":[]}]`,
	} {
		t.Run(name, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				for i := range 3 { // three searches, run and billed
					io.WriteString(w, namedEvent("response.output_item.done", fmt.Sprintf(`{"type":"response.output_item.done","output_index":%d,"item":%s}`, i, call)))
				}
				io.WriteString(w, namedEvent("response.completed", `{"type":"response.completed","response":{"id":"r","object":"response","status":"completed","model":"m","output":`+output+`,"usage":{"input_tokens":20,"output_tokens":90,"total_tokens":110}}}`))
				billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 90}) + 3*fee))
			})
			limit := 30 * Cent // a few reservations
			b := newTestBudget(t, BudgetConfig{Limit: limit, OutputReserve: 100, ToolPrices: map[string]Money{"web_search": fee}})
			sendUntilRefused(t, api.client(t, b), api.srv.URL+"/v1/responses", body, 40)
			assert.LessOrEqual(t, Money(billed.Load()), limit, "billed by the provider (spent %v)", b.Spent())
			assert.GreaterOrEqual(t, b.Spent(), Money(billed.Load()))
		})
	}
}

// sendUntilRefused posts body to url at most n times, reading each answer
// whole, until the Budget refuses one.
func sendUntilRefused(t *testing.T, c *http.Client, url, body string, n int) {
	t.Helper()
	for range n {
		resp, err := c.Post(url, "application/json", strings.NewReader(body))
		if errors.Is(err, ErrBudgetExceeded) {
			return
		}
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func TestChoicesCarryOutput(t *testing.T) {
	for v, want := range map[string]bool{
		`[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]`:                                true,
		`[{"index":0,"delta":{"content":""}}]`:                                                       true, // whatever its text: see choicesCarryOutput
		`[{"delta":{"role":"assistant"}},{"index":1,"delta":{"reasoning_content":"r"}}]`:             true,
		`[ {"index":0,"delta":{"tool_calls":[]}} ]`:                                                  true,
		`[{"index":0,"text":"hi","finish_reason":null}]`:                                             true,
		`[{"index":0,"Delta":{"CONTENT":"hi"}}]`:                                                     true,
		`[{"index":0,"d\u0065lta":{"c\u006fntent":"hi"}}]`:                                           true,
		`[1,"x",{"delta":{"content":"hi"}}]`:                                                         true,
		`[]`:                                                                                         false,
		`[{"index":0,"delta":{},"finish_reason":"stop"}]`:                                            false,
		`[{"index":0,"delta":{"role":"assistant","content":null,"refusal":null}}]`:                   false,
		`[{"index":0,"text":null}]`:                                                                  false,
		`[{"index":0,"finish_reason":null,"content_filter_offsets":{"check_offset":5},"content":1}]`: false, // Azure's annotation
		`[{"index":0,"deltas":{"content":"hi"},"message":{"content":"hi"}}]`:                         false,
		`[1,"x",null,[{"delta":{"content":"hi"}}]]`:                                                  false,
		`{"delta":{"content":"hi"}}`:                                                                 false,
	} {
		assert.Equal(t, want, choicesCarryOutput([]byte(v)), v)
	}
}
