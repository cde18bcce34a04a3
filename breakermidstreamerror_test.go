package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An Anthropic stream that fails mid-answer ends with its error event, no
// message_stop after it, and an OpenAI chat stream with its error chunk, no
// [DONE] after it: the stream ended there, whole. It reaches the reader as
// it came, and counts by its error, as a Responses stream's error event
// that ends it does (see errorFault): overloaded_error (Anthropic's 529),
// api_error, server_error or a 5xx code is the provider failing, a
// failure; a rate limit, the Limiter's signal, and a caller's error count
// neither way. It was taken for a stream cut short: the reader got
// io.ErrUnexpectedEOF, and the attempt counted a failure whatever the error
// said, so that one rate_limit_error opened a circuit.
func TestBreakerCountsAStreamEndedByItsErrorByWhoseFaultItWas(t *testing.T) {
	const (
		chat      = "/v1/chat/completions"
		messages  = "/v1/messages"
		openAI500 = `{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}`
		vllm500   = `{"object":"error","message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500}`
		vllm429   = `{"object":"error","message":"Too many requests","type":"RateLimitError","param":null,"code":429}`
	)
	anthropic := func(error string) []string {
		return append(append([]string{}, anthropicEvents[:2]...), anthropicErrorEvent(error))
	}
	for name, tc := range map[string]struct {
		path    string
		events  []string
		failure bool // else it counts neither way
	}{
		"anthropic overloaded_error":      {messages, anthropic(`{"type":"overloaded_error","message":"Overloaded"}`), true},
		"anthropic api_error":             {messages, anthropic(`{"type":"api_error","message":"Internal server error"}`), true},
		"anthropic, a \"quoted\" message": {messages, anthropic(`{"message":"a \"quoted\" message","type":"overloaded\u005ferror"}`), true},
		"anthropic, then a blank line":    {messages, append(anthropic(`{"type":"api_error","message":"x"}`), "data:\n\n: keep-alive\n\n"), true},
		"anthropic rate_limit_error": {messages, anthropic(`{"type":"rate_limit_error",` +
			`"message":"This request would exceed your organization's rate limit of 40,000 output tokens per minute."}`), false},
		"anthropic invalid_request_error": {messages, anthropic(`{"type":"invalid_request_error","message":"x"}`), false},
		"anthropic, the error alone":      {messages, []string{anthropicErrorEvent(`{"type":"rate_limit_error","message":"x"}`)}, false},
		"openai server_error":             {chat, []string{openAIChunk, chatErrorChunk(openAI500)}, true},
		"vllm InternalServerError":        {chat, []string{openAIChunk, chatErrorChunk(vllm500)}, true},
		"code \"503\", CRLF":              {chat, []string{openAIChunk, "data: {\"error\":{\"message\":\"x\",\"code\":\"503\"}}\r\n\r\n"}, true},
		"an error with its choices":       {chat, []string{openAIChunk, "data: {\"id\":\"c1\",\"choices\":[],\"error\":" + vllm500 + "}\n\n"}, true},
		"completions":                     {"/v1/completions", []string{chatErrorChunk(openAI500)}, true},
		"openai rate_limit_exceeded": {chat, []string{openAIChunk, chatErrorChunk(`{"message":"Rate limit reached for gpt-4o","type":"tokens",` +
			`"param":null,"code":"rate_limit_exceeded"}`)}, false},
		"vllm RateLimitError":           {chat, []string{openAIChunk, chatErrorChunk(vllm429)}, false},
		"context_length_exceeded":       {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}`)}, false},
		"an error without type or code": {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x"}`)}, false},
		"an error that is a string":     {chat, []string{openAIChunk, chatErrorChunk(`"server_error"`)}, false},
	} {
		t.Run(name, func(t *testing.T) {
			assertEndedStreamCounts(t, tc.path, tc.events, tc.failure)
		})
	}
}

// A stream that goes on after its error did not end there: cut short after
// the data line that followed, it reaches the reader as the error it is,
// and counts as a failure whatever the error said. An error null is no
// error: a stream cut after it is cut.
func TestBreakerCountsAStreamThatGoesOnAfterItsErrorAsCut(t *testing.T) {
	rateLimit := anthropicErrorEvent(`{"type":"rate_limit_error","message":"x"}`)
	chatRateLimit := chatErrorChunk(`{"message":"x","code":"rate_limit_exceeded"}`)
	for name, tc := range map[string]struct {
		path   string
		events []string
	}{
		"anthropic, a delta after it":      {"/v1/messages", []string{anthropicEvents[0], rateLimit, anthropicEvents[1]}},
		"anthropic, message_delta after":   {"/v1/messages", []string{anthropicEvents[0], rateLimit, anthropicEvents[2]}},
		"chat, a chunk after it":           {"/v1/chat/completions", []string{openAIChunk, chatRateLimit, openAIChunk}},
		"chat, a line that is no JSON":     {"/v1/chat/completions", []string{openAIChunk, chatRateLimit, "data: x\n\n"}},
		"chat, a chunk with an error null": {"/v1/chat/completions", []string{chatRateLimit, "data: {\"choices\":[],\"error\":null}\n\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := sseServer(t, tc.events...)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

			got, err := readStream(t, clientFor(t, r.b), srv.URL, tc.path)

			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			assert.Equal(t, strings.Join(tc.events, ""), got)
			assert.Equal(t, CircuitOpen, r.stats(t).State)
		})
	}
}

// The caller closing a stream at the error that ended it (openai-go stops
// at a data line with an error object, anthropic-sdk-go at an error event),
// or the connection breaking after it, counts as reading it to its end
// does: by the error. Closed there, it counted neither way whatever the
// error (but a Responses stream's); cut there, a failure.
func TestBreakerCountsAnErrorThatEndsAStreamClosedOrCutAfterIt(t *testing.T) {
	for name, tc := range map[string]struct {
		path    string
		events  []string
		failure bool
	}{
		"responses server_error": {"/v1/responses", append(append([]string{}, responsesStreamStart...),
			responsesErrorEvent(`"error":{"type":"server_error","code":"server_error","message":"x","param":null}`)), true},
		"responses rate_limit_exceeded": {"/v1/responses", append(append([]string{}, responsesStreamStart...),
			responsesErrorEvent(`"error":{"type":"tokens","code":"rate_limit_exceeded","message":"x","param":null}`)), false},
		"anthropic overloaded_error": {"/v1/messages", append(append([]string{}, anthropicEvents[:2]...),
			anthropicErrorEvent(`{"type":"overloaded_error","message":"Overloaded"}`)), true},
		"anthropic rate_limit_error": {"/v1/messages", append(append([]string{}, anthropicEvents[:2]...),
			anthropicErrorEvent(`{"type":"rate_limit_error","message":"x"}`)), false},
		"chat server_error":        {"/v1/chat/completions", []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"server_error","code":null}`)}, true},
		"chat rate_limit_exceeded": {"/v1/chat/completions", []string{openAIChunk, chatErrorChunk(`{"message":"x","code":"rate_limit_exceeded"}`)}, false},
	} {
		want := CircuitClosed
		if tc.failure {
			want = CircuitOpen
		}
		t.Run(name+", closed", func(t *testing.T) {
			srv := holdingAfter(t, tc.events)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
			resp, err := clientFor(t, r.b).Post(srv.URL+tc.path, "application/json", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)
			got := make([]byte, len(strings.Join(tc.events, "")))
			_, err = io.ReadFull(resp.Body, got)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			s := r.stats(t)
			assert.Equal(t, want, s.State)
			assert.Equal(t, tc.failure, s.Calls == 1, "counted only when the provider failed")
		})
		t.Run(name+", cut after it", func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, e := range tc.events {
					io.WriteString(w, e)
					w.(http.Flusher).Flush()
				}
				panic(http.ErrAbortHandler)
			})
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

			_, err := readStream(t, clientFor(t, r.b), srv.URL, tc.path)

			require.Error(t, err)
			s := r.stats(t)
			assert.Equal(t, want, s.State)
			assert.Equal(t, tc.failure, s.Calls == 1, "counted only when the provider failed")
		})
	}
}

// The scanner ends a stream at its error (a Responses or Anthropic error
// event, a chat stream's error chunk) however the stream is split into
// writes, and only while no data line but a blank one follows it.
func TestSSEScannerEndsAStreamAtItsError(t *testing.T) {
	start := strings.Join(responsesStreamStart, "")
	delta := responsesStreamStart[1]
	rateLimit := responsesErrorEvent(`"code":"rate_limit_exceeded","message":"x","param":null`)
	anthropicStart := strings.Join(anthropicEvents[:2], "")
	overloaded := anthropicErrorEvent(`{"type":"overloaded_error","message":"a \"quoted\" message"}`)
	chatError := chatErrorChunk(`{"object":"error","message":"a \"quoted\" message","type":"InternalServerError","param":null,"code":500}`)
	for name, tc := range map[string]struct {
		stream string
		ended  bool
		want   responseFault
	}{
		"responses server_error": {start + responsesErrorEvent(`"code":"server_error","message":"a \"quoted\" message","param":null`), true, faultProvider},
		"responses error object": {start + responsesErrorEvent(`"error":{"code":"server_error","message":"x"}`), true, faultProvider},
		"responses rate limit":   {start + rateLimit, true, faultOther},
		"then a blank data line": {start + rateLimit + "data:\n\n: comment\n\n", true, faultOther},
		"then response.failed": {start + rateLimit + responsesFailedWith(`"error":{"code":"server_error"}`),
			true, faultProvider},
		"then a delta, the template":       {start + delta + rateLimit + delta, false, faultNone},
		"then a cut line":                  {start + rateLimit + "data: {\"type\":\"response.output_text.delta\"", false, faultNone},
		"anthropic overloaded_error":       {anthropicStart + overloaded, true, faultProvider},
		"anthropic rate_limit_error":       {anthropicStart + anthropicErrorEvent(`{"type":"rate_limit_error","message":"x"}`), true, faultOther},
		"anthropic, then message_stop":     {anthropicStart + overloaded + anthropicStop, true, faultProvider},
		"anthropic, then a delta":          {anthropicStart + overloaded + anthropicEvents[1], false, faultNone},
		"chat InternalServerError":         {openAIChunk + chatError, true, faultProvider},
		"chat, then [DONE]":                {openAIChunk + chatError + openAIDone, true, faultProvider},
		"chat, then a chunk, the template": {openAIChunk + openAIChunk + chatError + openAIChunk, false, faultNone},
		"chat, a rate limit, then content": {openAIChunk + chatErrorChunk(`{"code":429}`) + openAIChunk + openAIDone, true, faultOther},
		"chat, an error null":              {openAIChunk + "data: {\"choices\":[],\"error\":null}\n\n", false, faultNone},
	} {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{1, 7, 64, len(tc.stream)} {
				for _, lexAll := range []bool{false, true} {
					fault, ended := faultInWrites(tc.stream, size, lexAll)
					require.Equal(t, tc.ended, ended, "writes of %d bytes, lexAll %v", size, lexAll)
					if ended {
						assert.Equal(t, tc.want, fault, "writes of %d bytes, lexAll %v", size, lexAll)
					}
				}
			}
		})
	}
}
