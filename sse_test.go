package httpguard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestObserveUsageReadsSSEStreams(t *testing.T) {
	openAIUsage := Usage{InputTokens: 19, OutputTokens: 2}
	usageChunk := `"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}`
	tests := []struct {
		name, body string
		want       Usage // when not ok, what the stream reported before it broke off or spoilt
		ok         bool
	}{
		{"openai", openAIStream, openAIUsage, true},
		{"openai crlf", strings.ReplaceAll(openAIStream, "\n", "\r\n"), openAIUsage, true},
		{"openai data without space", strings.ReplaceAll(openAIStream, "data: ", "data:"), openAIUsage, true},
		{"openai escaped usage key", strings.Replace(openAIStream, usageChunk, `"\u0075sage"`+usageChunk[len(`"usage"`):], 1), openAIUsage, true},
		{"openai usage key that is not usage", strings.Replace(openAIStream, usageChunk, `"usage\n"`+usageChunk[len(`"usage"`):], 1), Usage{}, false},
		{"openai usage in another case", strings.Replace(openAIStream, usageChunk, `"Usage"`+usageChunk[len(`"usage"`):], 1), openAIUsage, false}, // what encoding/json reads, not ok
		{"openai without include_usage", strings.ReplaceAll(openAIStream, usageChunk, `"usage":null`), Usage{}, false},
		{"openai cut before DONE", strings.TrimSuffix(openAIStream, "data: [DONE]\n\n"), Usage{InputTokens: 19, OutputTokens: 2}, false}, // what it reported, not ok
		{"openai cut mid-chunk", openAIStream[:200], Usage{}, false},
		{"openai DONE without final newline", strings.TrimSuffix(openAIStream, "\n\n"), openAIUsage, true},
		{"openai DONE with spaces", strings.Replace(openAIStream, "data: [DONE]", "data:  [DONE] \r", 1), openAIUsage, true},
		{"openai error in stream", strings.Replace(openAIStream, "data: [DONE]", "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]", 1), Usage{InputTokens: 19, OutputTokens: 2}, false},
		{"openai data that is not JSON", strings.Replace(openAIStream, "data: [DONE]", "data: [DONE\n\ndata: [DONE]", 1), Usage{InputTokens: 19, OutputTokens: 2}, false},
		{"openai invalid JSON", strings.Replace(openAIStream, `"index":0`, `"index":01`, 1), Usage{InputTokens: 19, OutputTokens: 2}, false},
		{"openai lying usage", strings.Replace(openAIStream, `"completion_tokens":2`, `"completion_tokens":-2`, 1), Usage{}, false},
		{"openai malformed usage", strings.Replace(openAIStream, `"completion_tokens":2,`, `"completion_tokens":2,,`, 1), Usage{}, false},
		{"openai data after DONE spoils the usage", openAIStream + "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n", Usage{InputTokens: 19, OutputTokens: 2}, false},
		{"anthropic usage after message_stop spoils the usage, and counts", anthropicStream + "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":90}}\n\n", Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 90}, false},
		{"comments and blank data after the end are harmless", openAIStream + ": keep-alive\n\ndata:\n\ndata: \r\n\n", openAIUsage, true},
		{"[DONE] after message_stop is harmless", anthropicStream + "data: [DONE]\n\n", Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"a second [DONE] is harmless", openAIStream + "data:  [DONE] \r\n\r\n", openAIUsage, true},
		{"data that starts as [DONE] after the end spoils the usage", anthropicStream + "data: [DONE]{}\n\n", Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, false},
		{"blank data lines are skipped", strings.Replace(openAIStream, ": keep-alive", "data: \r", 1), openAIUsage, true},
		{"only comments", ": keep-alive\n\n: keep-alive\n\n", Usage{}, false},
		{"anthropic takes the last cumulative delta", anthropicStream, Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic one-hour cache writes in message_start", strings.Replace(anthropicStream, `"cache_read_input_tokens":10,`,
			`"cache_read_input_tokens":10,"cache_creation_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":40},`, 1),
			Usage{InputTokens: 75, CachedInputTokens: 10, CacheWriteInputTokens: 40, CacheWrite1hInputTokens: 40, OutputTokens: 15}, true},
		{"responses: usage in response.completed", responsesStream, Usage{InputTokens: 40, CachedInputTokens: 16, OutputTokens: 2, counted: outputCounts}, true},
		{"responses: response.incomplete ends it too", strings.ReplaceAll(responsesStream, "response.completed", "response.incomplete"),
			Usage{InputTokens: 40, CachedInputTokens: 16, OutputTokens: 2, counted: outputCounts}, true},
		{"responses: cut before response.completed", responsesStream[:strings.Index(responsesStream, "event: response.completed")], Usage{}, false},
		{"responses: response.failed", strings.ReplaceAll(responsesStream, "response.completed", "response.failed"), Usage{InputTokens: 40, CachedInputTokens: 16, OutputTokens: 2, counted: outputCounts}, false},
		{"responses: the usage of a response object of any length (its output, too long to keep, counts no call)",
			strings.Replace(responsesStream, "Hello there", strings.Repeat("x", maxResponseValue), 1), Usage{InputTokens: 40, CachedInputTokens: 16, OutputTokens: 2}, true},
		{"responses: a long response object within the bound", strings.Replace(responsesStream, "Hello there", strings.Repeat("x", 64<<10), 1),
			Usage{InputTokens: 40, CachedInputTokens: 16, OutputTokens: 2, counted: outputCounts}, true},
		{"anthropic crlf", strings.ReplaceAll(anthropicStream, "\n", "\r\n"), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic escaped type", strings.Replace(anthropicStream, `{"type":"message_stop"}`, `{"type":"message\u005fstop"}`, 1), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic cut before message_stop", strings.TrimSuffix(anthropicStream, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
			Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, false},
		{"anthropic error event", strings.Replace(anthropicStream, "event: message_stop", "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\nevent: message_stop", 1), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, false},
		{"anthropic absurd usage", strings.Replace(anthropicStream, `"output_tokens":15`, `"output_tokens":99999999999`, 1), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 8}, false},
		{"anthropic lying delta then honest one", strings.Replace(anthropicStream, `"output_tokens":8`, `"output_tokens":-8`, 1), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, false},
		{"anthropic message too long to read", strings.Replace(anthropicStream, `"content":[]`, `"content":["`+strings.Repeat("a", maxUsageValue)+`"]`, 1), Usage{OutputTokens: 15}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rep := observe(t, "text/event-stream; charset=utf-8", strings.NewReader(tt.body))
			assert.Equal(t, tt.body, got)
			assert.Equal(t, tt.ok, rep.ok)
			assert.Equal(t, tt.want, rep.u)
		})
	}
}

func TestObserveUsageReadsPastLongSSELines(t *testing.T) {
	// A line is read as it passes, never kept: its length does not matter.
	long := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("a", 2<<20) + "\"}}],\"usage\":null}\n\n"
	body := long + openAIStream
	got, rep := observe(t, "text/event-stream", chunked([]byte(body), 4096))
	assert.Equal(t, body, got)
	assert.True(t, rep.ok)
	assert.Equal(t, Usage{InputTokens: 19, OutputTokens: 2}, rep.u)
}

func TestSSEScannerSaysWhetherTheStreamTerminated(t *testing.T) {
	for body, want := range map[string]bool{
		openAIStream:    true,
		anthropicStream: true,
		strings.TrimSuffix(openAIStream, "data: [DONE]\n\n"):                                              false,
		strings.TrimSuffix(anthropicStream, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"): false,
		"data: [DONE]": true, // no newline: the end of the stream ends the line
	} {
		var s sseScanner
		for _, part := range strings.SplitAfter(body, "\n") {
			s.write([]byte(part))
		}
		s.result(true)
		assert.Equal(t, want, s.terminated, "%.60q", body)
	}
}

func TestSSEScannerFindsUsageOnlyChunks(t *testing.T) {
	events := []string{
		": hi\r\n\r\n",
		"data: {\"choices\":[{}],\"usage\":null}\n\n",
		"data: {\"choices\": [ ],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n", // the one
		"event: x\ndata: {\"choices\":[],\"usage\":{}}\ndata: {}\n\n",                          // two data lines
		"data: {\"Choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",   // choices in another case
		"data: [DONE]\n\n",
	}
	stream := strings.Join(events, "")
	var s sseScanner
	s.write([]byte(stream))
	start := len(events[0]) + len(events[1])
	assert.Equal(t, []sseSpan{{start, start + len(events[2])}}, s.cuts)
	assert.Equal(t, len(stream), s.lastEnd)

	s = sseScanner{}
	s.write([]byte(stream[:start+5]))
	assert.Empty(t, s.cuts)
	assert.Equal(t, start, s.lastEnd)
	s.write([]byte(stream[start+5:]))
	assert.Equal(t, []sseSpan{{-1, len(events[2]) - 5}}, s.cuts, "a cut that began in the write before")
}

func FuzzSSEScanner(f *testing.F) {
	for _, s := range []string{openAIStream, anthropicStream, responsesStream, ": x\r\n\r\ndata: [DONE]\r\n", "data:{\"usage\":{\"x\":\n\n", "data\n\n",
		strings.ReplaceAll(openAIStream, "\n", "\r"), strings.ReplaceAll(anthropicStream, "\n", "\r"), strings.ReplaceAll(openAIStream, "\n\n", "\r\n\r"),
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\r\ndata: [DONE]\r", "event: x\rdata\r: y\r\r",
		strings.Join(responsesStreamStart, "") + responsesFailedWith(`"error":{"message":"\"x\"","code":"server\u005ferror"}`),
		strings.Join(responsesStreamStart, "") + responsesFailedWith(`"error":{"code":500,"message":"x"}`),
		openAIChunk + chatErrorChunk(`{"object":"error","message":"\"x\"","type":"InternalServerError","param":null,"code":500}`) + "data: [DONE]\n\n",
		anthropicErrorEvent(`{"type":"overloaded_error","message":"Overloaded"}`) + anthropicStop,
		strings.Join(responsesStreamStart, "") + responsesErrorEvent(`"code":"rate_limit_exceeded","message":"\"x\"","param":null`),
		strings.Join(responsesStreamStart, "") + responsesErrorEvent(`"error":{"type":"server_error","code":"server_error","message":"x","param":null}`) +
			responsesStreamStart[1],
		strings.Join(anthropicEvents[:2], "") + anthropicErrorEvent(`{"type":"rate_limit_error","message":"\"x\""}`),
		strings.Join(anthropicEvents[:2], "") + anthropicErrorEvent(`{"type":"overloaded_error","message":"x"}`) + "data:\r\n\r\n" + anthropicEvents[1],
		openAIChunk + openAIChunk + chatErrorChunk(`{"message":"\"x\"","type":"server_error","param":null,"code":null}`),
		openAIChunk + chatErrorChunk(`{"message":"x","code":"rate_limit_exceeded"}`) + openAIChunk,
		openAIChunk + chatErrorChunk(`{"code":503}`) + "data: {\"choices\":[],\"error\":null}\n\n"} {
		f.Add([]byte(s), uint8(3))
		f.Add([]byte(s), uint8(1))
	}
	g := newJSONGen(10)
	for range 8 {
		f.Add(g.repeatingStream(), uint8(g.r.IntN(256)))
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		var whole, parts sseScanner
		whole.write(stream)
		cuts := append([]sseSpan(nil), whole.cuts...)
		for i := range cuts {
			cuts[i].start = max(cuts[i].start, 0)
		}
		wu, wok := whole.result(true)
		size := int(chunk)%13 + 1
		var partCuts []sseSpan
		lastEnd := 0 // where the last event ended in the stream
		for i := 0; i < len(stream); i += size {
			parts.write(stream[i:min(i+size, len(stream))])
			for _, c := range parts.cuts {
				start := lastEnd
				if c.start >= 0 {
					start = i + c.start
				}
				partCuts = append(partCuts, sseSpan{start, i + c.end})
			}
			if parts.lastEnd >= 0 {
				lastEnd = i + parts.lastEnd
			}
			// An event whose last \r ends a write ends there: the \n after it,
			// in the next write, is its too (see stripState.cutCR).
			if n := len(partCuts); n > 0 && partCuts[n-1].end == i+size && i+size < len(stream) &&
				stream[i+size-1] == '\r' && stream[i+size] == '\n' {
				partCuts[n-1].end++
			}
		}
		pu, pok := parts.result(true)
		if wu != pu || wok != pok || whole.terminated != parts.terminated || whole.ended() != parts.ended() || whole.fault != parts.fault {
			t.Fatalf("%q: whole %+v %v, in chunks of %d %+v %v", stream, wu, wok, size, pu, pok)
		}
		if fmt.Sprint(cuts) != fmt.Sprint(partCuts) {
			t.Fatalf("%q: usage-only events %v whole, %v in chunks of %d", stream, cuts, partCuts, size)
		}
		sizes := []int{size, 1, 2 * size, 64}
		if lexed, read := readSSE(stream, sizes, true), readSSE(stream, sizes, false); fmt.Sprint(lexed) != fmt.Sprint(read) {
			t.Fatalf("%q: every line lexed %+v, with the template %+v", stream, lexed, read)
		}
	})
}

// Lines a stream repeats, as providers send them: %[1]s and %[2]s are the
// text they carry, in free strings.
var repeatedLines = []string{
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"%[1]s"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"%[2]s"}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%[1]s"}}`,
	`{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"%[1]s"}}]}}],"usage":null,"x":["%[2]s"]}`,
	` { "choices" : [ { "delta" : { "content" : "%[1]s" } } ] , "usage" : null , "error" : null } ` + "\r",
	`{"id":"chatcmpl-2","object":"chat.completion.chunk","model":"gpt-4.1","service_tier":"default","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"%[1]s"},"finish_reason":null}],"usage":null}`,
}

// lineChanges turn a repeated line into one that may look like it but
// says something, or is not JSON: keys that matter in every spelling,
// usage and errors where they count and where they do not, text that
// holds what a key would, broken bytes.
var lineChanges = []func(g *jsonGen, line string) string{
	func(g *jsonGen, line string) string { // the usage key, spelt otherwise
		k := []string{`"Usage"`, `"USAGE"`, `"u\u0073age"`, `"\u0055sage"`, "\"u\u017fage\"", `"usage "`, `"usag"`, `"usage\u0000"`}[g.r.IntN(8)]
		return strings.Replace(line, `"usage"`, k, 1)
	},
	func(g *jsonGen, line string) string { // usage reported or empty, maybe usage-only
		u := []string{`{"prompt_tokens":7,"completion_tokens":3}`, `{}`, `{"prompt_tokens":null}`, `{"total_tokens":5}`}[g.r.IntN(4)]
		line = strings.Replace(line, `"usage":null`, `"usage":`+u, 1)
		if g.r.IntN(2) == 0 {
			line = strings.Replace(line, `"choices":[{`, `"choices":[],"x":[{`, 1)
		}
		return line
	},
	func(g *jsonGen, line string) string { // an error, or a key that reads as one
		k := []string{`"error"`, `"Error"`, `"\u0065rror"`, `"ERROR"`}[g.r.IntN(4)]
		v := []string{`{"message":"overloaded"}`, `null`, `"x"`}[g.r.IntN(3)]
		return strings.Replace(line, `{`, `{`+k+`:`+v+`,`, 1)
	},
	func(g *jsonGen, line string) string { // a type that ends the stream or fails it
		v := []string{`"error"`, `"message_stop"`, `"message\u005fstop"`, `"text_delta"`}[g.r.IntN(4)]
		k := []string{`"type"`, `"Type"`, `"typ\u0065"`}[g.r.IntN(3)]
		if strings.Contains(line, `"type":"content_block_delta"`) {
			return strings.Replace(line, `"type":"content_block_delta"`, k+`:`+v, 1)
		}
		return strings.Replace(line, `{`, `{`+k+`:`+v+`,`, 1)
	},
	func(g *jsonGen, line string) string { // Anthropic's message, with usage
		return strings.Replace(line, `{`, `{"message":{"usage":{"input_tokens":3,"output_tokens":4}},`, 1)
	},
	func(g *jsonGen, line string) string { // usage nested where it does not count
		return strings.Replace(line, `"delta":{`, `"delta":{"usage":{"prompt_tokens":5,"completion_tokens":1},`, 1)
	},
	func(g *jsonGen, line string) string { // the text holds a usage member
		return strings.Replace(line, `"text_delta"`, `"\",\"usage\":{\"prompt_tokens\":9}"`, 1)
	},
	func(g *jsonGen, line string) string { // a free string that is not one: raw quote, control, lone backslash
		bad := []string{`"`, "\x01", "\t", `\`, `\u12`, `\x`}[g.r.IntN(6)]
		i := strings.Index(line, `"content":"`)
		if i < 0 {
			i = strings.Index(line, `"text":"`)
		}
		if i < 0 {
			return line + bad
		}
		return line[:i+len(`"content":"`)] + bad + line[i+len(`"content":"`):]
	},
	func(g *jsonGen, line string) string { return string(g.corrupt([]byte(line))) },
	func(g *jsonGen, line string) string { // a number, literal or space changed
		i := g.r.IntN(len(line) + 1)
		return line[:i] + []string{" ", "0", "1", "-", "null", ",", "}", "]", "\r"}[g.r.IntN(9)] + line[i:]
	},
	func(g *jsonGen, line string) string { // a key that does not matter, or a value of a key that does
		return strings.Replace(line, `"choices"`, []string{`"Choices"`, `"choices2"`, `"ch\u006fices"`}[g.r.IntN(3)], 1)
	},
	func(g *jsonGen, line string) string { // a delta without output: empty, its role only, a null, or out of the choice
		v := []string{`"delta":{},"content_filter_offsets":{`, `"delta":{"role":"assistant"},"x":{`, `"delta":{"content":null},"x":{`, `"Delta":{`, `"d\u0065lta":{`, `"deltas":{`}[g.r.IntN(6)]
		return strings.Replace(line, `"delta":{`, v, 1)
	},
	func(g *jsonGen, line string) string { // a service tier, in every spelling, where it counts and where it does not
		v := []string{`"priority"`, `"priorit\u0079"`, `"default"`, `null`, `"Priority"`}[g.r.IntN(5)]
		if strings.Contains(line, `"service_tier":"default"`) && g.r.IntN(2) == 0 {
			return strings.Replace(line, `"default"`, v, 1)
		}
		k := []string{`"service_tier"`, `"Service_tier"`, `"service\u005ftier"`, "\"\u017fervice_tier\"", `"service_tier "`}[g.r.IntN(5)]
		if g.r.IntN(4) == 0 {
			return strings.Replace(line, `"delta":{`, `"delta":{`+k+`:`+v+`,`, 1)
		}
		return strings.Replace(line, `{`, `{`+k+`:`+v+`,`, 1)
	},
}

// freeText is text for free strings: JSON string content, escapes and
// all, sometimes long.
func (g *jsonGen) freeText() string {
	switch g.r.IntN(40) {
	case 0, 1:
		return strings.Repeat("long text ", 60) // past the scanner's inline room
	case 2:
		return strings.Repeat("x", maxTemplateLine) // past what a template keeps
	case 3, 4:
		return ""
	}
	var b bytes.Buffer
	g.string(&b, g.word()+" "+g.word())
	return b.String()[1 : b.Len()-1]
}

// repeatingStream writes an event stream of data lines that repeat one of
// repeatedLines with new text, now and then changed by lineChanges, with
// comments, event lines, blank data lines, lines ending in \n or, sometimes,
// \r\n, \r or any of them, an end and a usage chunk.
func (g *jsonGen) repeatingStream() []byte {
	var b bytes.Buffer
	base := repeatedLines[g.r.IntN(len(repeatedLines))]
	for range 1 + g.r.IntN(12) {
		switch g.r.IntN(10) {
		case 0:
			b.WriteString(": keep-alive\n\n")
			continue
		case 1:
			b.WriteString("event: content_block_delta\n")
		case 2:
			base = repeatedLines[g.r.IntN(len(repeatedLines))]
		case 3: // a change the lines that follow repeat
			base = lineChanges[g.r.IntN(len(lineChanges))](g, base)
		}
		line := fmt.Sprintf(base, g.freeText(), g.freeText())
		if g.r.IntN(4) == 0 {
			line = lineChanges[g.r.IntN(len(lineChanges))](g, line)
		}
		b.WriteString("data: " + line + "\n\n")
	}
	switch g.r.IntN(4) {
	case 0:
		b.WriteString("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n")
	case 1:
		b.WriteString("data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":5,\"output_tokens\":9}}\n\ndata: {\"type\":\"message_stop\"}\n\n")
	case 2:
		b.WriteString("data: [DONE]")
	}
	switch g.r.IntN(8) {
	case 0, 1:
		return bytes.ReplaceAll(b.Bytes(), []byte("\n"), []byte("\r\n"))
	case 2:
		return bytes.ReplaceAll(b.Bytes(), []byte("\n"), []byte("\r"))
	case 3: // each line end any of the three (a \r then a \n is then one)
		var mixed []byte
		for line := range bytes.Lines(b.Bytes()) {
			text, ended := bytes.CutSuffix(line, []byte("\n"))
			if mixed = append(mixed, text...); ended {
				mixed = append(mixed, []string{"\n", "\r\n", "\r"}[g.r.IntN(3)]...)
			}
		}
		return mixed
	}
	return b.Bytes()
}

// sseReading is what an sseScanner said of a stream written in parts.
type sseReading struct {
	u          Usage // without the model that served it
	model      modelHash
	ok         bool
	terminated bool
	ended      bool
	fault      responseFault
	cuts       []sseSpan // per write, -1 between writes
	lastEnds   []int
}

// readSSE reads stream, written in parts of sizes (the rest whole).
func readSSE(stream []byte, sizes []int, lexAll bool) sseReading {
	s := sseScanner{lexAll: lexAll}
	var r sseReading
	for len(stream) > 0 {
		n := len(stream)
		if len(sizes) > 0 {
			n, sizes = min(n, sizes[0]), sizes[1:]
		}
		s.write(stream[:n])
		stream = stream[n:]
		r.cuts = append(append(r.cuts, s.cuts...), sseSpan{-1, -1})
		r.lastEnds = append(r.lastEnds, s.lastEnd)
	}
	r.u, r.ok = s.result(true)
	r.model, r.u.servedBy = r.u.servedBy, 0
	r.terminated, r.ended, r.fault = s.terminated, s.ended(), s.fault
	return r
}

func TestSSEScannerTemplateReadsEveryLineAsTheLexerDoes(t *testing.T) {
	g := newJSONGen(8)
	for range 1500 {
		stream := g.repeatingStream()
		var sizes []int
		if g.r.IntN(2) == 0 {
			for range len(stream) / 8 {
				sizes = append(sizes, 1+g.r.IntN(600))
			}
		}
		want := readSSE(stream, sizes, true)
		got := readSSE(stream, sizes, false)
		require.Equal(t, want, got, "%q in writes of %v", stream, sizes)
	}
}

// A line that matches a template is read as inert without being lexed:
// every line that matches must lex as inert.
func checkTemplateMatch(t *testing.T, template, line []byte) {
	t.Helper()
	if end := bytes.IndexAny(template, "\r\n"); end >= 0 {
		template = template[:end] // a line, as the scanner frames it
	}
	var s sseScanner
	s.lexLine(template)
	if !s.line.inert() {
		return
	}
	rest := append(line[:len(line):len(line)], "\ndata: x"...)
	n := s.template.match(rest)
	if n < 0 {
		return
	}
	if n > len(line) || rest[n] != '\n' && rest[n] != '\r' || bytes.ContainsAny(rest[:n], "\r\n") {
		t.Fatalf("template %q matched %q up to %d", template, rest, n)
	}
	var l sseLine
	l.reset()
	l.write(rest[:n])
	if !l.inert() {
		t.Fatalf("template %q matched %q, which is not inert", template, rest[:n])
	}
}

func TestLineTemplateMatchesOnlyInertLines(t *testing.T) {
	g := newJSONGen(9)
	for range 6000 {
		base := repeatedLines[g.r.IntN(len(repeatedLines))]
		template := fmt.Sprintf(base, g.freeText(), g.freeText())
		line := fmt.Sprintf(base, g.freeText(), g.freeText())
		if g.r.IntN(2) == 0 {
			line = lineChanges[g.r.IntN(len(lineChanges))](g, line)
		}
		checkTemplateMatch(t, []byte(template), []byte(line))
	}
}

func TestLineTemplateMatchesTheLinesThatRepeatIt(t *testing.T) {
	for _, base := range repeatedLines {
		template := fmt.Sprintf(base, "Hel", "ab")
		var s sseScanner
		s.lexLine([]byte(template))
		require.True(t, s.line.inert(), template)
		for _, text := range [][2]string{{"lo", "abc"}, {"", ""}, {`\"quoted\" \u00e9\n`, "x"}, {strings.Repeat("é", 300), "Hel"}} {
			line := fmt.Sprintf(base, text[0], text[1])
			assert.Equal(t, len(line), s.template.match([]byte(line+"\n")), line)
		}
		for _, text := range [][2]string{{`"`, "x"}, {"\x01", ""}, {`\q`, ""}, {"a\nb", ""}} {
			line := fmt.Sprintf(base, text[0], text[1])
			assert.Equal(t, -1, s.template.match([]byte(line+"\n")), line)
		}
	}
}

func FuzzLineTemplate(f *testing.F) {
	for _, base := range repeatedLines {
		f.Add([]byte(fmt.Sprintf(base, "Hel", "ab")), []byte(fmt.Sprintf(base, "lo", "xyz")))
		f.Add([]byte(fmt.Sprintf(base, "Hel", "ab")), []byte(strings.Replace(fmt.Sprintf(base, "lo", "xyz"), `"usage"`, `"Usage"`, 1)))
		f.Add([]byte(fmt.Sprintf(base, "Hel", "ab")), []byte(strings.Replace(fmt.Sprintf(base, "lo", "xyz"), `"usage":null`, `"usage":{"prompt_tokens":1}`, 1)))
	}
	f.Fuzz(func(t *testing.T, template, line []byte) {
		checkTemplateMatch(t, template, line)
	})
}

func TestCommonPrefixFindsTheFirstDifference(t *testing.T) {
	g := newJSONGen(13)
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 300} {
		a := make([]byte, n)
		for i := range a {
			a[i] = byte(g.r.IntN(256))
		}
		require.Equal(t, n, commonPrefix(a, append([]byte(nil), a...)))
		require.Equal(t, n/2, commonPrefix(a, a[:n/2]))
		for k := range n {
			for _, d := range []byte{1, 0x20, 0x80, 0xff, byte(1 + g.r.IntN(255))} {
				b := append([]byte(nil), a...)
				b[k] ^= d
				require.Equal(t, k, commonPrefix(a, b), "%d bytes, byte %d differs by %#x", n, k, d)
				if k+1 < n { // differences after the first do not matter
					b[k+1+g.r.IntN(n-k-1)] ^= byte(1 + g.r.IntN(255))
				}
				require.Equal(t, k, commonPrefix(b, a), "%d bytes, byte %d differs", n, k)
			}
		}
	}
}

func TestSSEScannerReadsEveryRepeatedLineThatReportsUsage(t *testing.T) {
	// A line that reports usage is never a template: when it comes again
	// after another report, it is read again, and the last report of a
	// discount (cached tokens) wins.
	line := func(text string, n int) string {
		return fmt.Sprintf("data: {\"choices\":[{\"delta\":{\"content\":%q}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":5,"+
			"\"prompt_tokens_details\":{\"cached_tokens\":%d}}}\n\n", text, n)
	}
	long := strings.Repeat("x", maxTemplateLine) // lexed as it passes, never a template
	stream := line("a", 1) + line(long, 2) + line("b", 1) + "data: [DONE]\n\n"
	for _, lexAll := range []bool{false, true} {
		r := readSSE([]byte(stream), []int{4096}, lexAll)
		assert.True(t, r.ok)
		assert.Equal(t, Usage{InputTokens: 5, CachedInputTokens: 1, OutputTokens: 5}, r.u, "lexAll %v", lexAll)
	}
}

func TestSSEScannerAllocatesNothingPerLine(t *testing.T) {
	events := []byte(benchStream200[:strings.Index(benchStream200, `"choices":[],`)])
	events = events[:bytes.LastIndex(events, []byte("\n\n"))+2]
	var s sseScanner
	write := func() {
		for p := events; len(p) > 0; p = p[min(len(p), 1000):] { // lines span writes
			s.write(p[:min(len(p), 1000)])
		}
	}
	write()
	assert.Zero(t, testing.AllocsPerRun(20, write))
}

// A Responses stream's response object is read as the same object is in a
// JSON answer (which FuzzJSONUsageScannerAgreesWithEncodingJSON checks
// against encoding/json): its usage and the server tool calls its output
// lists, whatever else it holds, in any chunks.
func TestResponsesStreamReadsItsResponseObjectAsAJSONAnswer(t *testing.T) {
	g := newJSONGen(21)
	items := []string{`{"type":"web_search_call","id":"ws_1","status":"completed"}`, `{"type":"file_search_call"}`,
		`{"type":"message","content":[{"type":"output_text","text":"a \"web_search_call\""}]}`, `{"type":"code_interpreter_call","code":"x"}`}
	var read int
	for range 500 {
		var members []string
		var out []string
		for range g.r.IntN(4) {
			out = append(out, items[g.r.IntN(len(items))])
		}
		members = append(members, `"output":[`+strings.Join(out, ",")+`]`,
			fmt.Sprintf(`"usage":{"input_tokens":%d,"output_tokens":%d,"input_tokens_details":{"cached_tokens":%d}}`, g.r.IntN(1000), g.r.IntN(1000), g.r.IntN(10)))
		for range g.r.IntN(4) {
			var b bytes.Buffer
			g.key(&b)
			b.WriteByte(':')
			g.value(&b, 2)
			members = append(members, b.String())
		}
		if g.r.IntN(5) == 0 { // a repeated or differently spelt key
			members = append(members, []string{`"usage":null`, `"Usage":{"input_tokens":1}`, `"output":[]`, `"OUTPUT":[]`}[g.r.IntN(4)])
		}
		for range g.r.IntN(3) { // the tier it ran at, maybe said twice
			var b bytes.Buffer
			g.serviceTier(&b)
			members = append(members, b.String())
		}
		g.r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		// One data line: the generator's line breaks (whitespace only, as
		// strings escape theirs) become spaces.
		obj := strings.NewReplacer("\r", " ", "\n", " ").Replace("{" + strings.Join(members, ",") + "}")

		var answer jsonUsageScanner
		answer.write([]byte(obj))
		want, wantOK := answer.result()
		stream := "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":" + obj + "}\n\n"
		for _, size := range []int{len(stream), 1 + g.r.IntN(17)} {
			var s sseScanner
			for i := 0; i < len(stream); i += size {
				s.write([]byte(stream[i:min(i+size, len(stream))]))
			}
			got, gotOK := s.result(true)
			require.Equal(t, wantOK, gotOK, "%s in chunks of %d", obj, size)
			if wantOK {
				require.Equal(t, want, got, "%s in chunks of %d", obj, size)
				read++
			}
		}
	}
	assert.Greater(t, read, 500, "most objects hold usage to read")
}

func TestLineEndFindsTheFirstCROrLF(t *testing.T) {
	g := newJSONGen(12)
	for range 50000 {
		p := make([]byte, g.r.IntN(80))
		for i := range p {
			if p[i] = 'a'; g.r.IntN(8) == 0 {
				p[i] = []byte{'\r', '\n', 0x8d, 0x8a, 0x0c, 0x0e, 0xff, 0}[g.r.IntN(8)]
			}
		}
		require.Equal(t, bytes.IndexAny(p, "\r\n"), lineEnd(p), "%q", p)
	}
}

func TestStreamScannerStaysInItsSizeClass(t *testing.T) {
	// A stream's scanner is allocated for each streamed answer, and holds
	// pointers: over 512 bytes, its allocation carries an 8-byte header,
	// and 2,680 bytes is the most the 2,688-byte class takes. Its usage
	// readings (five wireUsages and a Usage) grow with each count the
	// field table reads.
	require.LessOrEqual(t, unsafe.Sizeof(streamScanner{}), uintptr(2688-8))
}
