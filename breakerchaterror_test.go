package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatErrorChunk is an OpenAI-style chat stream's error chunk holding
// error, as vLLM and other OpenAI-compatible servers send it mid-stream
// before their [DONE].
func chatErrorChunk(error string) string { return "data: {\"error\":" + error + "}\n\n" }

// anthropicErrorEvent is an Anthropic stream's error event holding error.
func anthropicErrorEvent(error string) string {
	return "event: error\ndata: {\"type\":\"error\",\"error\":" + error + "}\n\n"
}

// A chat stream that sends an error and then its terminal event ([DONE],
// message_stop) is whole: it reaches the reader as it came. What it says
// of the provider is its error's: a code of 5xx (but 501 and 505, as a
// status), or a type that names the server's failure, is the provider
// failing mid-generation (vLLM streams its InternalServerError so), a
// failure; it counted a success, so that a provider failing every answer
// this way never opened its circuit. A rate limit is the Limiter's signal,
// and any other error (a caller's, or one that cannot be read) the
// caller's: neither counts either way.
func TestBreakerCountsAChatStreamsErrorBeforeItsEndByWhoseFaultItWas(t *testing.T) {
	const (
		chat      = "/v1/chat/completions"
		messages  = "/v1/messages"
		done      = "data: [DONE]\n\n"
		vllm500   = `{"object":"error","message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500}`
		vllm400   = `{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}`
		vllm429   = `{"object":"error","message":"Too many requests","type":"RateLimitError","param":null,"code":429}`
		openAI500 = `{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}`
	)
	long := `{"message":"` + strings.Repeat("m", 4096) + `","type":"server_error","code":null}`
	anthropic := func(error string) []string {
		return append(append([]string{}, anthropicEvents[:2]...), anthropicErrorEvent(error), anthropicStop)
	}
	for name, tc := range map[string]struct {
		path    string
		events  []string
		failure bool // else it counts neither way
	}{
		"vllm InternalServerError":        {chat, []string{openAIChunk, chatErrorChunk(vllm500), done}, true},
		"openai server_error":             {chat, []string{openAIChunk, chatErrorChunk(openAI500), done}, true},
		"internal_error":                  {chat, []string{chatErrorChunk(`{"type":"internal_error","message":"x"}`), done}, true},
		"code 503":                        {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":503}`), done}, true},
		"code 529":                        {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":529}`), done}, true},
		"code \"502\"":                    {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":"502"}`), done}, true},
		"type escaped":                    {chat, []string{openAIChunk, chatErrorChunk(`{"message":"\"x\"","type":"server\u005ferror"}`), done}, true},
		"a long message":                  {chat, []string{openAIChunk, chatErrorChunk(long), done}, true},
		"error, then content":             {chat, []string{chatErrorChunk(vllm500), openAIChunk, done}, true},
		"error last in its line":          {chat, []string{"data: {\"id\":\"c1\",\"choices\":[],\"error\":" + vllm500 + "}\n\n", done}, true},
		"a caller's error, then vllm's":   {chat, []string{chatErrorChunk(vllm400), chatErrorChunk(vllm500), done}, true},
		"CRLF":                            {chat, []string{openAIChunk, "data: {\"error\":" + vllm500 + "}\r\n\r\n", "data: [DONE]\r\n\r\n"}, true},
		"anthropic overloaded_error":      {messages, anthropic(`{"type":"overloaded_error","message":"Overloaded"}`), true},
		"anthropic api_error":             {messages, anthropic(`{"type":"api_error","message":"Internal server error"}`), true},
		"vllm BadRequestError":            {chat, []string{openAIChunk, chatErrorChunk(vllm400), done}, false},
		"vllm RateLimitError":             {chat, []string{openAIChunk, chatErrorChunk(vllm429), done}, false},
		"rate_limit_exceeded":             {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"requests","code":"rate_limit_exceeded"}`), done}, false},
		"server_error for a rate limit":   {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"server_error","code":"rate_limit_exceeded"}`), done}, false},
		"code 429, type server_error":     {chat, []string{openAIChunk, chatErrorChunk(`{"type":"server_error","code":429}`), done}, false},
		"invalid_request_error":           {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}`), done}, false},
		"code 501":                        {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":501}`), done}, false},
		"code 5000":                       {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":5000}`), done}, false},
		"code 500.5":                      {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","code":500.5}`), done}, false},
		"a type in another case":          {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","type":"Server_Error"}`), done}, false},
		"a key in another case":           {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x","Type":"server_error"}`), done}, false},
		"an error that is a string":       {chat, []string{openAIChunk, chatErrorChunk(`"server_error"`), done}, false},
		"no type nor code":                {chat, []string{openAIChunk, chatErrorChunk(`{"message":"x"}`), done}, false},
		"vllm's, then a caller's":         {chat, []string{chatErrorChunk(vllm500), chatErrorChunk(vllm400), done}, false},
		"too long to read":                {chat, []string{openAIChunk, chatErrorChunk(`{"type":"server_error","message":"` + strings.Repeat("m", maxUsageValue) + `"}`), done}, false},
		"anthropic rate_limit_error":      {messages, anthropic(`{"type":"rate_limit_error","message":"x"}`), false},
		"anthropic invalid_request_error": {messages, anthropic(`{"type":"invalid_request_error","message":"x"}`), false},
	} {
		t.Run(name, func(t *testing.T) {
			assertEndedStreamCounts(t, tc.path, tc.events, tc.failure)
		})
	}
}

// An error null is no error, and one after the stream's end says nothing
// of it: both streams count a success.
func TestBreakerCountsAChatStreamWithoutAnErrorBeforeItsEndASuccess(t *testing.T) {
	for name, events := range map[string][]string{
		"error null":            {"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"error\":null}\n\n", "data: [DONE]\n\n"},
		"an error after [DONE]": {openAIChunk, "data: [DONE]\n\n", chatErrorChunk(`{"type":"server_error"}`)},
		"an error after message_stop": append(append(append([]string{}, anthropicEvents...), anthropicStop),
			anthropicErrorEvent(`{"type":"api_error","message":"x"}`)),
	} {
		t.Run(name, func(t *testing.T) {
			path := "/v1/chat/completions"
			if strings.HasPrefix(events[0], "event:") {
				path = "/v1/messages"
			}
			srv := sseServer(t, events...)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

			_, err := readStream(t, clientFor(t, r.b), srv.URL, path)

			require.NoError(t, err)
			s := r.stats(t)
			assert.Equal(t, CircuitClosed, s.State)
			assert.EqualValues(t, 1, s.Calls, "a success")
			assert.Zero(t, s.ConsecutiveFailures)
		})
	}
}

// The scanner reads a chat stream's error however the stream is split into
// writes, and takes it as the stream's fault only when the stream ended
// after it, or at it.
func TestSSEScannerReadsWhoseFaultAChatStreamsErrorWas(t *testing.T) {
	vllm500 := chatErrorChunk(`{"object":"error","message":"a \"quoted\" message","type":"InternalServerError","param":null,"code":500}`)
	anthropicStart := strings.Join(anthropicEvents[:2], "")
	for name, tc := range map[string]struct {
		stream string
		want   responseFault
	}{
		"no error":                  {openAIChunk + "data: [DONE]\n\n", faultNone},
		"vllm InternalServerError":  {openAIChunk + vllm500 + "data: [DONE]\n\n", faultProvider},
		"code \"503\"":              {openAIChunk + chatErrorChunk(`{"code":"503"}`) + "data: [DONE]\n\n", faultProvider},
		"anthropic overloaded":      {anthropicStart + anthropicErrorEvent(`{"type":"overloaded_error","message":"Overloaded"}`) + anthropicStop, faultProvider},
		"a rate limit":              {openAIChunk + chatErrorChunk(`{"type":"RateLimitError","code":429}`) + "data: [DONE]\n\n", faultOther},
		"a caller's":                {openAIChunk + chatErrorChunk(`{"type":"BadRequestError","code":400}`) + "data: [DONE]\n\n", faultOther},
		"an error after the end":    {openAIChunk + "data: [DONE]\n\n" + vllm500, faultNone},
		"ended by the error":        {openAIChunk + vllm500, faultProvider},
		"a response.failed decides": {vllm500 + responsesFailedWith(`"error":{"code":"invalid_prompt"}`), faultOther},
	} {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{1, 7, 64, len(tc.stream)} {
				for _, lexAll := range []bool{false, true} {
					fault, _ := faultInWrites(tc.stream, size, lexAll)
					assert.Equal(t, tc.want, fault, "writes of %d bytes, lexAll %v", size, lexAll)
				}
			}
		})
	}
}
