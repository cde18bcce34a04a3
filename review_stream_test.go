package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// OpenAI's usage chunk ends with "obfuscation" after its usage, and a
// Responses stream's response.completed object with "user" and
// "metadata": a stream cut there (its connection broken, or ended) had
// reported its usage whole, which the provider billed, yet was charged its
// reservation, less when the answer ran past OutputReserve: the usage of a
// line cut before its newline was never read.
func TestBudgetChargesTheUsageOfAStreamCutInsideItsUsageLine(t *testing.T) {
	const output = 50_000
	long := strings.Repeat("word ", 20_000) // a response object longer than a line the scanner holds
	responses := func(text string) string {
		return fmt.Sprintf("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\","+
			"\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":%q}]}],"+
			"\"usage\":{\"input_tokens\":20,\"output_tokens\":%d,\"total_tokens\":%d},\"us", text, output, output+20)
	}
	for name, tc := range map[string]struct{ path, body, stream string }{
		"chat, before obfuscation": {"/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`,
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"...\"}}],\"usage\":null}\n\n" +
				fmt.Sprintf("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d,\"total_tokens\":%d},\"obfusc", output, output+20)},
		"responses, before user":       {"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, responses("hi")},
		"responses, long, before user": {"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, responses(long)},
	} {
		for _, broken := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, broken %v", name, broken), func(t *testing.T) {
				api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
					w.Header().Set("Content-Type", "text/event-stream")
					io.WriteString(w, tc.stream)
					w.(http.Flusher).Flush()
					if broken {
						panic(http.ErrAbortHandler)
					}
				})
				var got Settlement
				b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
				resp, err := api.client(t, b).Post(api.srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
				require.NoError(t, err)
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				require.Equal(t, broken, err != nil)
				billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: output})
				require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
				assert.False(t, got.UsageKnown, "a stream cut short")
				assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; the stream reported usage costing %v", got.Charged, got.Reserved, billed)
			})
		}
	}
}

// A relay may report usage after the stream's end: an OpenAI usage chunk
// after [DONE], or (a relay translating OpenAI's stream into Anthropic's,
// whose usage chunk follows finish_reason) a message_delta after
// message_stop. Data after the end spoils the stream, which is charged its
// reservation; that usage was not read, so an answer that ran past
// OutputReserve was charged less than it reported.
func TestBudgetChargesTheUsageAStreamReportsAfterItsEnd(t *testing.T) {
	for name, tc := range map[string]struct {
		path, body, stream string
		billed             Usage
	}{
		"usage chunk after [DONE], no max_tokens": {"/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"...\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
				"data: [DONE]\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":50000,\"total_tokens\":50020}}\n\n",
			Usage{InputTokens: 20, OutputTokens: 50_000}},
		"message_delta after message_stop, search results in the prompt": {"/v1/messages", `{"model":"m","max_tokens":100,"stream":true,"messages":[]}`,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":90000,\"output_tokens\":100}}\n\n",
			Usage{InputTokens: 90_000, OutputTokens: 100}},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, answerStream(tc.stream))
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, tc.path, tc.body)
			billed := testPrices["m"].Cost(tc.billed)
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "data after the end spoils the stream")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; the stream reported usage costing %v", got.Charged, got.Reserved, billed)
		})
	}
}

// SDKs decode a stream's events whatever its Content-Type; a relay may
// send none (Starlette's StreamingResponse without a media type) or
// text/plain. Such a stream was read as JSON: its usage was lost (the
// reservation charged, less than an answer past OutputReserve reported),
// and the usage-only chunk the Budget asked for reached a caller that did
// not, whose code indexes Choices[0].
func TestBudgetReadsAStreamWhateverItsContentType(t *testing.T) {
	const output = 50_000
	content, done := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n", "data: [DONE]\n\n"
	stream := content + fmt.Sprintf("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", output, output+20) + done
	for _, ct := range [][]string{nil, {"text/plain; charset=utf-8"}, {"application/octet-stream"}} {
		t.Run(fmt.Sprint(ct), func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header()["Content-Type"] = ct // nil: none, not sniffed
				io.WriteString(w, stream)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			read := readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`)
			assert.Equal(t, content+done, read, "the stream without the usage-only chunk")
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: output})
			require.True(t, got.UsageKnown)
			assert.Equal(t, billed, got.Charged, "charged %v, reserved %v", got.Charged, got.Reserved)
		})
	}
	// A streaming request answered with JSON is read as JSON.
	api := newFakeAPI(t, answerUsage(20, 30))
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`)
	assert.Equal(t, Usage{InputTokens: 20, OutputTokens: 30}, got.Usage)
}

// A usage that decoders read differently (repeated, or followed by null:
// encoding/json merges the objects and ignores the null, others keep the
// last) was charged the reservation, however much the reading an SDK
// takes said: it is now charged that reading when it costs more.
func TestBudgetChargesTheDearerReadingOfAnAmbiguousUsage(t *testing.T) {
	big := `{"prompt_tokens":20,"completion_tokens":50000,"total_tokens":50020}`
	for name, tc := range map[string]struct{ contentType, answer string }{
		"stream, null after":  {"text/event-stream", "data: {\"choices\":[],\"usage\":" + big + ",\"usage\":null}\n\ndata: [DONE]\n\n"},
		"stream, small after": {"text/event-stream", "data: {\"choices\":[],\"usage\":" + big + ",\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n"},
		"json, null after":    {"application/json", `{"choices":[],"usage":` + big + `,"usage":null}`},
		"json, small before":  {"application/json", `{"choices":[],"usage":{"prompt_tokens":20,"prompt_tokens_details":{"cached_tokens":20}},"usage":` + big + `}`},
	} {
		t.Run(name, func(t *testing.T) {
			got := settleAnswer(t, "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, tc.contentType, tc.answer)
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000})
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "an ambiguous usage")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; the dearer reading costs %v", got.Charged, got.Reserved, billed)
		})
	}
}

// The SSE spec, and openai-python (a caller of `httpguard proxy` may use
// it), end a line at \r\n, \n or \r. A stream framed with lone \r was one
// line to the scanner: its usage was lost (the reservation charged, less
// than the answer reported), and the usage-only chunk the Budget asked for
// reached a caller that did not ask for it.
func TestBudgetReadsAStreamFramedWithCarriageReturns(t *testing.T) {
	const output = 50_000
	events := []string{
		"event: chunk\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
		": keep-alive\n\n",
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}],\"usage\":null}\n\n",
		fmt.Sprintf("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", output, output+20),
		"data: [DONE]\n\n",
	}
	for name, eol := range map[string]string{"CR": "\r", "CRLF, split after each CR": "\r\n", "LF": "\n"} {
		t.Run(name, func(t *testing.T) {
			var stream, want strings.Builder
			for i, ev := range events {
				stream.WriteString(strings.ReplaceAll(ev, "\n", eol))
				if i != 3 {
					want.WriteString(strings.ReplaceAll(ev, "\n", eol))
				}
			}
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, part := range strings.SplitAfter(stream.String(), "\r") { // a \n after a \r in the next write
					io.WriteString(w, part)
					w.(http.Flusher).Flush()
				}
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			read := readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`)
			assert.Equal(t, want.String(), read, "the stream without the usage-only chunk")
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: output})
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.True(t, got.UsageKnown)
			assert.Equal(t, billed, got.Charged, "charged %v, reserved %v; the stream reported usage costing %v", got.Charged, got.Reserved, billed)
		})
	}
}

// encoding/json, and so the SDKs that decode with it, match keys
// case-insensitively: a "Usage" key is their usage, which other decoders
// skip. It spoilt the usage, and the answer was charged its reservation
// however much that usage said; it is now read as encoding/json reads it,
// not trusted, and charged when it costs more than the reservation.
func TestBudgetChargesAUsageKeyInAnotherCase(t *testing.T) {
	const chat, chatBody = "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	big := `{"prompt_tokens":20,"completion_tokens":50000,"total_tokens":50020}`
	for name, tc := range map[string]struct{ path, body, contentType, answer string }{
		"stream":                {chat, chatBody, "text/event-stream", "data: {\"choices\":[],\"Usage\":" + big + "}\n\ndata: [DONE]\n\n"},
		"stream, after a usage": {chat, chatBody, "text/event-stream", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20},\"USAGE\":" + big + "}\n\ndata: [DONE]\n\n"},
		"json":                  {chat, chatBody, "application/json", `{"choices":[],"Usage":` + big + `}`},
		"json, escaped, upper":  {chat, chatBody, "application/json", `{"choices":[],"\u0055sage":` + big + `}`},
		"responses stream": {"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, "text/event-stream",
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"Usage\":{\"input_tokens\":20,\"output_tokens\":50000}}}\n\n"},
		"anthropic message_start": {"/v1/messages", `{"model":"m","max_tokens":100,"stream":true,"messages":[]}`, "text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"Usage\":{\"input_tokens\":90000,\"output_tokens\":1}}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			got := settleAnswer(t, tc.path, tc.body, tc.contentType, tc.answer)
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000})
			if tc.path == "/v1/messages" {
				billed = testPrices["m"].Cost(Usage{InputTokens: 90_000, OutputTokens: 1})
			}
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "a usage decoders read differently")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; encoding/json reads usage costing %v", got.Charged, got.Reserved, billed)
		})
	}
}

// settleAnswer sends body to path through a Budget (OutputReserve 100) to
// a server that answers with answer, of contentType, reads the answer and
// returns the attempt's settlement.
func settleAnswer(t *testing.T, path, body, contentType, answer string) Settlement {
	t.Helper()
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, answer)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, path, body)
	return got
}
