package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The parsers' benchmarks: each reports MB/s of the body it reads (SetBytes)
// and its allocations. The bodies are the ones issue 7 measures: a chat
// request with an 8 KiB prompt, a 1 KiB JSON answer, and a streamed answer of
// 200 chunks with include_usage.

// benchRequest8KiB is a streaming chat request with an 8 KiB prompt, as
// encoding/json writes it (escaped newlines and quotes, UTF-8 text).
var benchRequest8KiB = func() []byte {
	var sb strings.Builder
	for sb.Len() < 8<<10 {
		sb.WriteString("Summarise the \"report\" below in three bullet points.\nThe café's revenue grew 12% — 你好, see table 3.\n")
	}
	type message struct{ Role, Content string }
	body, err := json.Marshal(struct {
		Model     string    `json:"model"`
		Messages  []message `json:"messages"`
		MaxTokens int       `json:"max_tokens"`
		Stream    bool      `json:"stream"`
	}{"gpt-4.1", []message{{"system", "You are terse."}, {"user", sb.String()}}, 1024, true})
	if err != nil {
		panic(err)
	}
	return bytes.ReplaceAll(bytes.ReplaceAll(body, []byte(`"Role"`), []byte(`"role"`)), []byte(`"Content"`), []byte(`"content"`))
}()

// benchAnswer1KiB is an OpenAI chat completion of about 1 KiB.
var benchAnswer1KiB = `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4.1-2025-04-14",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat(`The report's main point: revenue grew.\n`, 18) + `",` +
	`"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
	`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
	`"service_tier":"default","system_fingerprint":"fp_f12167b370"}`

// benchAnswerSmall is a short OpenAI chat completion, as a small chat
// request gets.
var benchAnswerSmall = `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4.1-2025-04-14",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
	`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
	`"service_tier":"default","system_fingerprint":"fp_f12167b370"}`

// benchStream200 is a streamed OpenAI answer of 200 content chunks, then the
// usage chunk include_usage asks for, then [DONE].
var benchStream200 = func() string {
	var sb strings.Builder
	const head = `data: {"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_f12167b370",`
	for i := range 200 {
		fmt.Fprintf(&sb, "%s\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token%d\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", head, i)
	}
	sb.WriteString(head + `"choices":[],"usage":{"prompt_tokens":1117,"completion_tokens":200,"total_tokens":1317,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}` + "\n\ndata: [DONE]\n\n")
	return sb.String()
}()

// benchAnthropicStream200 is a streamed Anthropic answer of 200 text
// deltas, with its usage at the start and in the last message_delta.
var benchAnthropicStream200 = func() string {
	var sb strings.Builder
	sb.WriteString("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," +
		"\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1117,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n")
	sb.WriteString("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	for i := range 200 {
		fmt.Fprintf(&sb, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" token%d\"}}\n\n", i)
	}
	sb.WriteString("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	sb.WriteString("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":200}}\n\n")
	sb.WriteString("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	return sb.String()
}()

func BenchmarkScanRequest8KiB(b *testing.B) { benchParse(b, benchRequest8KiB) }

// benchParse measures parseChatRequest on body.
func benchParse(b *testing.B, body []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := parseChatRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

// scanBody is a resettable response body.
type scanBody struct{ strings.Reader }

func (*scanBody) Close() error { return nil }

// benchmarkScanAnswer reads body as an SDK does (4 KiB reads), through
// wrap, and fails unless usage was reported.
func benchmarkScanAnswer(b *testing.B, contentType, body string, wrap func(*http.Response)) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	buf := make([]byte, 4096)
	var oks int
	rb := &scanBody{}
	resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}}
	report := func(u Usage, ok bool) {
		if ok {
			oks++
		}
	}
	for b.Loop() {
		rb.Reset(body)
		resp.Body = rb
		observeUsage(resp, report)
		if wrap != nil {
			wrap(resp)
		}
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
	if oks == 0 {
		b.Fatal("usage not found")
	}
}

func BenchmarkScanJSONAnswerSmall(b *testing.B) {
	benchmarkScanAnswer(b, "application/json", benchAnswerSmall, nil)
}

// BenchmarkScanJSONAnswerShort is the answer of bench/'s small chat.
func BenchmarkScanJSONAnswerShort(b *testing.B) {
	benchmarkScanAnswer(b, "application/json", string(benchAnswerShort), nil)
}

func BenchmarkScanJSONAnswer1KiB(b *testing.B) {
	benchmarkScanAnswer(b, "application/json", benchAnswer1KiB, nil)
}

func BenchmarkScanSSEStream200Chunks(b *testing.B) {
	benchmarkScanAnswer(b, "text/event-stream", benchStream200, nil)
}

func BenchmarkScanSSEAnthropicStream200Events(b *testing.B) {
	benchmarkScanAnswer(b, "text/event-stream", benchAnthropicStream200, nil)
}

// The usage reader and the stripper, as the Budget stacks them on a stream
// whose include_usage it added.
func BenchmarkScanSSEStreamStripped200Chunks(b *testing.B) {
	benchmarkScanAnswer(b, "text/event-stream", benchStream200, func(resp *http.Response) {
		resp.Body = newUsageChunkStripper(resp.Body)
	})
}

func BenchmarkScanUsageChunkStripper200Chunks(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchStream200)))
	buf := make([]byte, 4096)
	rb := &scanBody{}
	for b.Loop() {
		rb.Reset(benchStream200)
		s := newUsageChunkStripper(rb)
		n := 0
		for {
			k, err := s.Read(buf)
			n += k
			if err != nil {
				break
			}
		}
		if n >= len(benchStream200) {
			b.Fatal("the usage chunk was not stripped")
		}
	}
}

// drainBody reads r as http.Transport sends a body (4 KiB reads) and
// returns how many bytes it gave.
func drainBody(r io.Reader, buf []byte) int {
	n := 0
	for {
		k, err := r.Read(buf)
		n += k
		if err != nil {
			return n
		}
	}
}

// What the Budget does to add include_usage to a stream request, and what
// the transport then reads: the edit, applied to a request whose GetBody
// gives the body as an SDK's does.
func BenchmarkScanWithStreamUsage8KiB(b *testing.B) {
	body := benchRequest8KiB
	cr, at, err := parseStreamRequest(body)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	buf := make([]byte, 4096)
	getBody := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r := &http.Request{}
	for b.Loop() {
		e, changed := withStreamUsage(body, &cr, &at)
		if !changed {
			b.Fatal("unchanged")
		}
		r.GetBody = getBody
		e.apply(r)
		if drainBody(r.Body, buf) <= len(body) {
			b.Fatal("short")
		}
	}
}

// benchRequestSmall is a small chat request, as the bench module's chat
// case sends.
var benchRequestSmall = []byte(`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hello"}],"max_tokens":64}`)

func BenchmarkScanRequestSmall(b *testing.B) { benchParse(b, benchRequestSmall) }

// benchResponsesRequest is an OpenAI Responses request carrying a long
// conversation in its input, as an agent loop sends it: messages, the
// function calls it made (with their IDs) and their outputs, reasoning
// items.
var benchResponsesRequest = func() []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-5","max_output_tokens":2048,"input":[`)
	for turn := 0; sb.Len() < 8<<10; turn++ {
		if turn > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"role":"user","content":"Turn %d: what is the weather in Paris, and should I take an umbrella?"},`, turn)
		fmt.Fprintf(&sb, `{"type":"reasoning","id":"rs_68af%04d","summary":[]},`, turn)
		fmt.Fprintf(&sb, `{"type":"function_call","id":"fc_68af%04d","call_id":"call_%04d","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},`, turn, turn)
		fmt.Fprintf(&sb, `{"type":"function_call_output","call_id":"call_%04d","output":"{\"temperature\":14,\"rain\":0.6}"},`, turn)
		sb.WriteString(`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"It is 14 °C with a 60 % chance of rain: take an umbrella."}]}`)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}()

func BenchmarkScanResponsesRequest8KiB(b *testing.B) { benchParse(b, benchResponsesRequest) }

// benchToolsRequest is a chat request as an agent loop sends it: twelve
// function tools with their JSON schemas, and a conversation of tool
// calls and their results, 8 KiB in all.
var benchToolsRequest = func() []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4.1","max_tokens":1024,"tools":[`)
	for i := range 12 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"type":"function","function":{"name":"tool_%d","description":"Looks up the record %d in the store and returns its fields.","parameters":{"type":"object","properties":{"id":{"type":"string","description":"The record's ID"},"fields":{"type":"array","items":{"type":"string"}},"limit":{"type":"integer","minimum":1,"maximum":100}},"required":["id"],"additionalProperties":false}}}`, i, i)
	}
	sb.WriteString(`],"messages":[{"role":"system","content":"You are a helpful agent."}`)
	for turn := 0; sb.Len() < 8<<10; turn++ {
		fmt.Fprintf(&sb, `,{"role":"user","content":"Find record %d."},{"role":"assistant","content":null,"tool_calls":[{"id":"call_%04d","type":"function","function":{"name":"tool_1","arguments":"{\"id\":\"r%d\"}"}}]},{"role":"tool","tool_call_id":"call_%04d","content":"{\"id\":\"r%d\",\"name\":\"x\"}"}`, turn, turn, turn, turn, turn)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}()

func BenchmarkScanToolsRequest8KiB(b *testing.B) { benchParse(b, benchToolsRequest) }

// benchAnswerShort is the bench module's short chat answer (its Stack/chat
// case), usage in it.
var benchAnswerShort = []byte(`{"id":"c1","object":"chat.completion","model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`)

// The two whole-buffer readers on the small chat: the request body read
// with every string checked (requestReader.read: readWhole, which the
// lexer backs), and the answer read in one write.
func BenchmarkLexRequestSmall(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchRequestSmall)))
	for b.Loop() {
		var r requestReader
		if err := r.read(benchRequestSmall, nil, -1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLexAnswerShort(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchAnswerShort)))
	s := new(jsonUsageScanner)
	for b.Loop() {
		*s = jsonUsageScanner{}
		s.write(benchAnswerShort)
		if _, ok := s.result(); !ok {
			b.Fatal("usage not read")
		}
	}
}
