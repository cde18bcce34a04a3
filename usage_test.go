package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseChatRequestReadsOpenAIAndAnthropicFields(t *testing.T) {
	tests := []struct {
		name string
		body string
		want chatRequest
	}{
		{"openai max_tokens", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`,
			chatRequest{Model: "gpt-4.1", MaxOutput: 100, Choices: 1}},
		{"openai max_completion_tokens", `{"model":"o3","max_completion_tokens":2048,"messages":[]}`,
			chatRequest{Model: "o3", MaxOutput: 2048, Choices: 1}},
		{"responses max_output_tokens", `{"model":"gpt-4.1","input":"hi","max_output_tokens":7}`,
			chatRequest{Model: "gpt-4.1", MaxOutput: 7, Choices: 1}},
		{"stream with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			chatRequest{Model: "m", Stream: true, IncludeUsage: true, Choices: 1, hasStreamOptions: true}},
		{"stream without usage", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			chatRequest{Model: "m", Stream: true, Choices: 1, hasStreamOptions: true}},
		{"n choices", `{"model":"m","n":3,"max_tokens":10}`,
			chatRequest{Model: "m", MaxOutput: 10, Choices: 3}},
		{"fraction rounds up", `{"model":"m","max_tokens":10.2}`,
			chatRequest{Model: "m", MaxOutput: 11, Choices: 1}},
		{"negative is absent", `{"model":"m","max_tokens":-5}`,
			chatRequest{Model: "m", Choices: 1}},
		{"absurd is clamped", `{"model":"m","max_tokens":1e300}`,
			chatRequest{Model: "m", MaxOutput: maxUsageTokens, Choices: 1}},
		{"anthropic", `{"model":"claude-sonnet-4-5","system":"be brief","max_tokens":1024,"stream":true,"messages":[]}`,
			chatRequest{Model: "claude-sonnet-4-5", Stream: true, MaxOutput: 1024, Choices: 1, Anthropic: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseChatRequest([]byte(tt.body))
			require.NoError(t, err)
			got.PromptTokens, got.EstimatedPromptTokens = 0, 0
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseChatRequestRejectsBodiesThatAreNotJSONObjects(t *testing.T) {
	for _, body := range []string{``, `not json`, `[1,2]`, `null`, `"s"`, `{"model":"m"`, `{"stream":"yes"}`} {
		_, err := parseChatRequest([]byte(body))
		assert.Error(t, err, body)
	}
}

func TestParseChatRequestPromptBoundIsAtLeastTheBodyLength(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"héllo wörld, 你好"}]}`
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	assert.Equal(t, int64(len(body)), cr.PromptTokens)
}

func TestParseChatRequestAddsAllowancesForImagesAndTools(t *testing.T) {
	body := `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/i.png"}}]}]}`
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	assert.Equal(t, int64(len(body))+2*imageTokenAllowance+toolsTokenAllowance, cr.PromptTokens)
}

func TestParseChatRequestEstimatesAQuarterOfTheContentBytes(t *testing.T) {
	messages := `[{"role":"user","content":"` + strings.Repeat("a", 400) + `"}]`
	cr, err := parseChatRequest([]byte(`{"model":"m","max_tokens":5,"messages":` + messages + `}`))
	require.NoError(t, err)
	assert.Equal(t, int64(len(messages)/4), cr.EstimatedPromptTokens)

	cr, err = parseChatRequest([]byte(`{"model":"m"}`))
	require.NoError(t, err)
	assert.Equal(t, int64(1), cr.EstimatedPromptTokens)
}

func TestWithStreamUsageAddsIncludeUsageAndKeepsTheRest(t *testing.T) {
	bodies := []string{
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		` { "stream" : true , "model":"m"}`,
		`{"model":"m","stream":true,"stream_options":null}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false},"x":[1,{"y":2}]}`,
		`{"model":"m","stream_options":{},"stream":true}`,
	}
	for _, body := range bodies {
		t.Run(body, func(t *testing.T) {
			cr, err := parseChatRequest([]byte(body))
			require.NoError(t, err)
			out, changed := withStreamUsage([]byte(body), cr)
			require.True(t, changed)

			got, err := parseChatRequest(out)
			require.NoError(t, err)
			assert.True(t, got.IncludeUsage)

			var before, after map[string]any
			require.NoError(t, json.Unmarshal([]byte(body), &before))
			require.NoError(t, json.Unmarshal(out, &after))
			opts, _ := before["stream_options"].(map[string]any)
			if opts == nil {
				opts = map[string]any{}
			}
			opts["include_usage"] = true
			before["stream_options"] = opts
			assert.Equal(t, before, after)
		})
	}
}

func TestWithStreamUsageLeavesOtherBodiesAlone(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[]}`,
		`{"model":"m","stream":false}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"claude","system":"x","stream":true,"max_tokens":5}`,
	} {
		cr, err := parseChatRequest([]byte(body))
		require.NoError(t, err)
		out, changed := withStreamUsage([]byte(body), cr)
		assert.False(t, changed, body)
		assert.Equal(t, body, string(out))
	}
}

// Sample answers, as providers send them.
const (
	openAIJSON = `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4.1","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"Hello! \"usage\": {\"prompt_tokens\": 999}"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,` +
		`"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4}}}`
	anthropicJSON = `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],` +
		`"model":"claude-sonnet-4-5","stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":5,` +
		`"cache_read_input_tokens":100,"output_tokens":7}}`
	openAIStream = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
		": keep-alive\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21," +
		"\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" +
		"data: [DONE]\n\n"
	anthropicStream = "event: message_start\n" +
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," +
		"\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n" +
		"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":8}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

type usageReport struct {
	calls int
	u     Usage
	ok    bool
}

// observe runs body through observeUsage as the caller would, reading with r
// (nil: io.ReadAll) and closing, and returns what the caller read and what
// was reported.
func observe(t *testing.T, contentType string, body io.Reader) (string, usageReport) {
	t.Helper()
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(body)}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 1, rep.calls, "report must be called exactly once")
	return string(got), rep
}

func TestObserveUsageReadsJSONAnswers(t *testing.T) {
	tests := []struct {
		name, body string
		want       Usage
		ok         bool
	}{
		{"openai", openAIJSON, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true},
		{"anthropic adds cache reads and writes to input", anthropicJSON,
			Usage{InputTokens: 117, CachedInputTokens: 100, CacheWriteInputTokens: 5, OutputTokens: 7}, true},
		{"deepseek cache hits", `{"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":40}}`,
			Usage{InputTokens: 100, CachedInputTokens: 60, OutputTokens: 5}, true},
		{"responses input includes cached", `{"object":"response","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":20},"output_tokens":9,"total_tokens":59}}`,
			Usage{InputTokens: 50, CachedInputTokens: 20, OutputTokens: 9}, true},
		{"keep-alive blank lines first", "\n\n \n" + openAIJSON + "\n", Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true},
		{"usage first", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[]}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"no usage", `{"choices":[{"message":{"content":"hi"}}]}`, Usage{}, false},
		{"null usage", `{"choices":[],"usage":null}`, Usage{}, false},
		{"empty usage", `{"usage":{}}`, Usage{}, false},
		{"nested usage is not top-level", `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]}`, Usage{}, false},
		{"truncated", openAIJSON[:len(openAIJSON)-1], Usage{}, false},
		{"trailing garbage", openAIJSON + "x", Usage{}, false},
		{"array", `[` + openAIJSON + `]`, Usage{}, false},
		{"not json", `<html>bad gateway</html>`, Usage{}, false},
		{"negative", `{"usage":{"prompt_tokens":-1,"completion_tokens":5}}`, Usage{}, false},
		{"absurd", `{"usage":{"prompt_tokens":1,"completion_tokens":1000000001}}`, Usage{}, false},
		{"cached above input", `{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":11}}}`, Usage{}, false},
		{"fractional", `{"usage":{"prompt_tokens":1.5,"completion_tokens":1}}`, Usage{}, false},
		{"string count", `{"usage":{"prompt_tokens":"10","completion_tokens":1}}`, Usage{}, false},
		{"oversized usage", `{"usage":{"prompt_tokens":1,"completion_tokens":1,"x":"` + strings.Repeat("a", maxUsageValue) + `"}}`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rep := observe(t, "application/json", strings.NewReader(tt.body))
			assert.Equal(t, tt.body, got)
			assert.Equal(t, tt.ok, rep.ok)
			assert.Equal(t, tt.want, rep.u)
		})
	}
}

func TestObserveUsageReadsSSEStreams(t *testing.T) {
	openAIUsage := Usage{InputTokens: 19, OutputTokens: 2}
	tests := []struct {
		name, body string
		want       Usage
		ok         bool
	}{
		{"openai", openAIStream, openAIUsage, true},
		{"openai crlf", strings.ReplaceAll(openAIStream, "\n", "\r\n"), openAIUsage, true},
		{"openai data without space", strings.ReplaceAll(openAIStream, "data: ", "data:"), openAIUsage, true},
		{"openai without include_usage", strings.ReplaceAll(openAIStream, `"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}`, `"usage":null`), Usage{}, false},
		{"openai cut before DONE", strings.TrimSuffix(openAIStream, "data: [DONE]\n\n"), Usage{}, false},
		{"openai cut mid-chunk", openAIStream[:200], Usage{}, false},
		{"openai DONE without final newline", strings.TrimSuffix(openAIStream, "\n\n"), openAIUsage, true},
		{"openai error in stream", strings.Replace(openAIStream, "data: [DONE]", "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]", 1), Usage{}, false},
		{"openai lying usage", strings.Replace(openAIStream, `"completion_tokens":2`, `"completion_tokens":-2`, 1), Usage{}, false},
		{"openai malformed usage", strings.Replace(openAIStream, `"completion_tokens":2,`, `"completion_tokens":2,,`, 1), Usage{}, false},
		{"only comments", ": keep-alive\n\n: keep-alive\n\n", Usage{}, false},
		{"anthropic takes the last cumulative delta", anthropicStream, Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic crlf", strings.ReplaceAll(anthropicStream, "\n", "\r\n"), Usage{InputTokens: 35, CachedInputTokens: 10, OutputTokens: 15}, true},
		{"anthropic cut before message_stop", strings.TrimSuffix(anthropicStream, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), Usage{}, false},
		{"anthropic error event", strings.Replace(anthropicStream, "event: message_stop", "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\nevent: message_stop", 1), Usage{}, false},
		{"anthropic absurd usage", strings.Replace(anthropicStream, `"output_tokens":15`, `"output_tokens":99999999999`, 1), Usage{}, false},
		{"anthropic lying delta then honest one", strings.Replace(anthropicStream, `"output_tokens":8`, `"output_tokens":-8`, 1), Usage{}, false},
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

func TestObserveUsageSkipsOverlongSSELines(t *testing.T) {
	long := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("a", maxSSELine) + "\"}}]}\n\n"
	body := long + openAIStream
	got, rep := observe(t, "text/event-stream", strings.NewReader(body))
	assert.Equal(t, body, got)
	assert.False(t, rep.ok)
}

// splitReader returns its data in reads of the given sizes, then the rest.
type splitReader struct {
	data  []byte
	sizes []int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n, r.sizes = min(r.sizes[0], n), r.sizes[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestObserveUsageHandlesEveryChunkBoundary(t *testing.T) {
	samples := []struct{ contentType, body string }{
		{"text/event-stream", openAIStream},
		{"text/event-stream", strings.ReplaceAll(openAIStream, "\n", "\r\n")},
		{"text/event-stream", anthropicStream},
		{"application/json", openAIJSON},
		{"application/json", anthropicJSON},
	}
	for _, s := range samples {
		_, whole := observe(t, s.contentType, strings.NewReader(s.body))
		require.True(t, whole.ok)
		for k := 0; k <= len(s.body); k++ {
			got, rep := observe(t, s.contentType, &splitReader{data: []byte(s.body), sizes: []int{k}})
			require.Equal(t, s.body, got, "split at %d", k)
			require.Equal(t, whole, rep, "split at %d", k)
		}
		got, rep := observe(t, s.contentType, iotestOneByte(s.body))
		assert.Equal(t, s.body, got)
		assert.Equal(t, whole, rep, "one byte at a time")
	}
}

func TestObserveUsageKeepsTheLastUsageValueWhateverTheReads(t *testing.T) {
	long := `{"usage":{"prompt_tokens":1,"completion_tokens":1,"x":"` + strings.Repeat("a", maxUsageValue) + `"},`
	for name, body := range map[string]string{
		"duplicate keys":           `{"usage":{"prompt_tokens":9,"completion_tokens":9},"usage":{"prompt_tokens":2,"completion_tokens":3}}`,
		"an oversized value first": long + `"usage":{"prompt_tokens":2,"completion_tokens":3}}`,
	} {
		for _, r := range []func() io.Reader{
			func() io.Reader { return strings.NewReader(body) },
			func() io.Reader { return iotestOneByte(body) },
			func() io.Reader { return &splitReader{data: []byte(body), sizes: []int{7, 4096, 3}} },
		} {
			got, rep := observe(t, "application/json", r())
			require.Equal(t, body, got, name)
			assert.True(t, rep.ok, name)
			assert.Equal(t, Usage{InputTokens: 2, OutputTokens: 3}, rep.u, name)
		}
	}
}

func iotestOneByte(s string) io.Reader {
	sizes := make([]int, len(s))
	for i := range sizes {
		sizes[i] = 1
	}
	return &splitReader{data: []byte(s), sizes: sizes}
}

func TestObserveUsageReportsOKWhenCloseFollowsACompleteJSONValue(t *testing.T) {
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(openAIJSON + "\n"))}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	buf := make([]byte, len(openAIJSON)) // json.Decoder-like: stops after the value, before EOF
	_, err := io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	require.Equal(t, 0, rep.calls)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, usageReport{1, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true}, rep)
}

func TestObserveUsageReportsNotOKWhenClosedMidStream(t *testing.T) {
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(strings.NewReader(openAIStream))}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
	_, err := resp.Body.Read(make([]byte, 100))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, resp.Body.Close())
	_, _ = resp.Body.Read(make([]byte, 100))
	assert.Equal(t, usageReport{calls: 1}, rep)
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestObserveUsageReportsNotOKOnReadError(t *testing.T) {
	boom := errors.New("connection reset")
	var rep usageReport
	resp := &http.Response{Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(&failingReader{data: []byte(openAIStream), err: boom})}
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
	got, err := io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, openAIStream, string(got))
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, usageReport{calls: 1}, rep)
}

func TestObserveUsageReportsAtOnceWithoutABody(t *testing.T) {
	var rep usageReport
	observeUsage(&http.Response{}, func(u Usage, ok bool) { rep.calls++; rep.ok = ok })
	assert.Equal(t, usageReport{calls: 1}, rep)
}

func TestObserveUsageReadsAStreamOverLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, frame := range strings.SplitAfter(openAIStream, "\n\n") {
			_, _ = io.WriteString(w, frame)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	resp, err := client.Get(srv.URL)
	require.NoError(t, err)
	var rep usageReport
	observeUsage(resp, func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok })
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, openAIStream, string(got))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 19, OutputTokens: 2}, true}, rep)
}

// referenceChatRequest is parseChatRequest written with encoding/json, to
// fuzz the hand scanner against.
func referenceChatRequest(body []byte) (chatRequest, bool) {
	var m map[string]json.RawMessage
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' || json.Unmarshal(body, &m) != nil {
		return chatRequest{}, false
	}
	var cr chatRequest
	if v, ok := m["model"]; ok && json.Unmarshal(v, &cr.Model) != nil {
		return chatRequest{}, false
	}
	if v, ok := m["stream"]; ok && json.Unmarshal(v, &cr.Stream) != nil {
		return chatRequest{}, false
	}
	if v, ok := m["stream_options"]; ok {
		cr.hasStreamOptions = true
		var opts map[string]json.RawMessage
		if json.Unmarshal(v, &opts) != nil {
			return chatRequest{}, false
		}
		if iu, ok := opts["include_usage"]; ok && json.Unmarshal(iu, &cr.IncludeUsage) != nil {
			return chatRequest{}, false
		}
	}
	cr.MaxOutput = max(tokenCount(m["max_tokens"]), tokenCount(m["max_completion_tokens"]), tokenCount(m["max_output_tokens"]))
	cr.Choices = max(1, tokenCount(m["n"]))
	cr.Anthropic = rawLen(m["system"]) > 0 || rawLen(m["anthropic_version"]) > 0 || rawLen(m["stop_sequences"]) > 0
	return cr, true
}

func FuzzParseChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","stream":true,"stream_options":null,"max_tokens":5}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
		`{"model":"claude","system":"x","max_tokens":5,"stream":true}`,
		`{"model":"m","n":2,"max_completion_tokens":1.5e3}`, `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cr, err := parseChatRequest(body)
		want, ok := referenceChatRequest(body)
		if (err == nil) != ok {
			t.Fatalf("parseChatRequest(%q) error %v, encoding/json ok %v", body, err, ok)
		}
		if err != nil {
			return
		}
		got := cr
		got.PromptTokens, got.EstimatedPromptTokens = 0, 0
		if got != want {
			t.Fatalf("parseChatRequest(%q) = %+v, encoding/json reads %+v", body, got, want)
		}
		if cr.PromptTokens < int64(len(body)) || cr.EstimatedPromptTokens < 1 || cr.Choices < 1 ||
			cr.MaxOutput < 0 || cr.MaxOutput > maxUsageTokens {
			t.Fatalf("bad bounds %+v for %q", cr, body)
		}
		out, changed := withStreamUsage(body, cr)
		if !changed {
			if !bytes.Equal(out, body) {
				t.Fatalf("unchanged body differs")
			}
			return
		}
		got, err = parseChatRequest(out)
		if err != nil {
			t.Fatalf("rewritten body %q does not parse: %v", out, err)
		}
		if !got.IncludeUsage || got.Model != cr.Model || got.Stream != cr.Stream || got.MaxOutput != cr.MaxOutput {
			t.Fatalf("rewrite changed the request: %+v -> %+v (%q)", cr, got, out)
		}
	})
}

func FuzzJSONMembersAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{openAIJSON, anthropicJSON, `{"a":[1,-0.5e+3,true,null,"\u00e9\n"]}`, `{"a":01}`, `{"a":"\x"}`, `{}`, ` {"a":{}} `, `{"a" 1}`, "{\"a\":\"\x01\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := jsonMembers(data, func([]byte, bool, []byte) error { n++; return nil })
		t0 := bytes.TrimLeft(data, " \t\r\n")
		want := json.Valid(data) && len(t0) > 0 && t0[0] == '{'
		if (err == nil) != want {
			t.Fatalf("jsonMembers(%q) = %v, json.Valid says %v", data, err, want)
		}
	})
}

func FuzzObserveUsage(f *testing.F) {
	for _, s := range []string{openAIJSON, anthropicJSON, openAIStream, anthropicStream, ": x\r\n\r\ndata: [DONE]\r\n", `{"usage":{"x":`} {
		f.Add([]byte(s), true, uint8(7))
		f.Add([]byte(s), false, uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, sse bool, chunk uint8) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		sizes := make([]int, len(body))
		for i := range sizes {
			sizes[i] = int(chunk)%17 + 1
		}
		calls := 0
		resp := &http.Response{Header: http.Header{"Content-Type": {ct}}, Body: io.NopCloser(&splitReader{data: body, sizes: sizes})}
		observeUsage(resp, func(u Usage, ok bool) {
			calls++
			if ok && (u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedInputTokens < 0 ||
				u.CachedInputTokens+u.CacheWriteInputTokens > u.InputTokens || u.InputTokens > maxUsageTokens || u.OutputTokens > maxUsageTokens) {
				t.Fatalf("reported out-of-range usage %+v", u)
			}
		})
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("caller read %q, %v; want %q", got, err, body)
		}
		_ = resp.Body.Close()
		if calls != 1 {
			t.Fatalf("report called %d times", calls)
		}
	})
}

// resettableBody is a resettable body for benchmarks.
type resettableBody struct{ strings.Reader }

func (*resettableBody) Close() error { return nil }

func benchmarkObserve(b *testing.B, contentType, body string) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	buf := make([]byte, 4096)
	var okCount int
	rb := &resettableBody{}
	resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}}
	report := func(u Usage, ok bool) {
		if ok {
			okCount++
		}
	}
	for b.Loop() {
		rb.Reset(body)
		resp.Body = rb
		observeUsage(resp, report)
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
	if okCount == 0 {
		b.Fatal("usage not found")
	}
}

func BenchmarkObserveUsageJSON(b *testing.B) {
	benchmarkObserve(b, "application/json", openAIJSON)
}

func BenchmarkObserveUsageStream200Chunks(b *testing.B) {
	var sb strings.Builder
	for i := range 200 {
		fmt.Fprintf(&sb, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token %d \"},\"finish_reason\":null}],\"usage\":null}\n\n", i)
	}
	sb.WriteString("data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":200,\"total_tokens\":219}}\n\ndata: [DONE]\n\n")
	benchmarkObserve(b, "text/event-stream", sb.String())
}

func FuzzUsageChunkStripper(f *testing.F) {
	f.Add([]byte(openAIStream), uint8(3))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r\n")), uint8(1))
	f.Add([]byte("data: {\"choices\": [ ],\"usage\":{}}\n\n"), uint8(5))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		sizes := make([]int, len(stream))
		for i := range sizes {
			sizes[i] = int(chunk)%13 + 1
		}
		got, err := io.ReadAll(newUsageChunkStripper(io.NopCloser(&splitReader{data: stream, sizes: sizes})))
		if err != nil || len(got) > len(stream) {
			t.Fatalf("read %d of %d bytes, %v", len(got), len(stream), err)
		}
		if !bytes.Contains(stream, []byte(`"usage"`)) && !bytes.Equal(got, stream) {
			t.Fatalf("a stream without usage changed: %q -> %q", stream, got)
		}
	})
}
