package httpguard

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestObserveUsageReadsSSEStreams(t *testing.T) {
	openAIUsage := Usage{InputTokens: 19, OutputTokens: 2}
	usageChunk := `"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}`
	tests := []struct {
		name, body string
		want       Usage
		ok         bool
	}{
		{"openai", openAIStream, openAIUsage, true},
		{"openai crlf", strings.ReplaceAll(openAIStream, "\n", "\r\n"), openAIUsage, true},
		{"openai data without space", strings.ReplaceAll(openAIStream, "data: ", "data:"), openAIUsage, true},
		{"openai escaped usage key", strings.Replace(openAIStream, usageChunk, `"\u0075sage"`+usageChunk[len(`"usage"`):], 1), openAIUsage, true},
		{"openai usage key that is not usage", strings.Replace(openAIStream, usageChunk, `"usage\n"`+usageChunk[len(`"usage"`):], 1), Usage{}, false},
		{"openai usage in another case", strings.Replace(openAIStream, usageChunk, `"Usage"`+usageChunk[len(`"usage"`):], 1), Usage{}, false},
		{"openai without include_usage", strings.ReplaceAll(openAIStream, usageChunk, `"usage":null`), Usage{}, false},
		{"openai cut before DONE", strings.TrimSuffix(openAIStream, "data: [DONE]\n\n"), Usage{}, false},
		{"openai cut mid-chunk", openAIStream[:200], Usage{}, false},
		{"openai DONE without final newline", strings.TrimSuffix(openAIStream, "\n\n"), openAIUsage, true},
		{"openai DONE with spaces", strings.Replace(openAIStream, "data: [DONE]", "data:  [DONE] \r", 1), openAIUsage, true},
		{"openai error in stream", strings.Replace(openAIStream, "data: [DONE]", "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]", 1), Usage{}, false},
		{"openai data that is not JSON", strings.Replace(openAIStream, "data: [DONE]", "data: [DONE\n\ndata: [DONE]", 1), Usage{}, false},
		{"openai invalid JSON", strings.Replace(openAIStream, `"index":0`, `"index":01`, 1), Usage{}, false},
		{"openai lying usage", strings.Replace(openAIStream, `"completion_tokens":2`, `"completion_tokens":-2`, 1), Usage{}, false},
		{"openai malformed usage", strings.Replace(openAIStream, `"completion_tokens":2,`, `"completion_tokens":2,,`, 1), Usage{}, false},
		{"openai usage after DONE does not count", openAIStream + "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n", openAIUsage, true},
		{"blank data lines are skipped", strings.Replace(openAIStream, ": keep-alive", "data: \r", 1), openAIUsage, true},
		{"only comments", ": keep-alive\n\n: keep-alive\n\n", Usage{}, false},
		{"anthropic takes the last cumulative delta", anthropicStream, Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic crlf", strings.ReplaceAll(anthropicStream, "\n", "\r\n"), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic escaped type", strings.Replace(anthropicStream, `{"type":"message_stop"}`, `{"type":"message\u005fstop"}`, 1), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic cut before message_stop", strings.TrimSuffix(anthropicStream, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), Usage{}, false},
		{"anthropic error event", strings.Replace(anthropicStream, "event: message_stop", "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\nevent: message_stop", 1), Usage{}, false},
		{"anthropic absurd usage", strings.Replace(anthropicStream, `"output_tokens":15`, `"output_tokens":99999999999`, 1), Usage{}, false},
		{"anthropic lying delta then honest one", strings.Replace(anthropicStream, `"output_tokens":8`, `"output_tokens":-8`, 1), Usage{}, false},
		{"anthropic message too long to read", strings.Replace(anthropicStream, `"content":[]`, `"content":["`+strings.Repeat("a", maxUsageValue)+`"]`, 1), Usage{}, false},
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
	for _, s := range []string{openAIStream, anthropicStream, ": x\r\n\r\ndata: [DONE]\r\n", "data:{\"usage\":{\"x\":\n\n", "data\n\n"} {
		f.Add([]byte(s), uint8(3))
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
		}
		pu, pok := parts.result(true)
		if wu != pu || wok != pok || whole.terminated != parts.terminated {
			t.Fatalf("%q: whole %+v %v, in chunks of %d %+v %v", stream, wu, wok, size, pu, pok)
		}
		if fmt.Sprint(cuts) != fmt.Sprint(partCuts) {
			t.Fatalf("%q: usage-only events %v whole, %v in chunks of %d", stream, cuts, partCuts, size)
		}
	})
}
