package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/holysheep/httpguard"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A provider ends a stream that fails mid-answer with its error and nothing
// after it: Anthropic with an error event (no message_stop), OpenAI's chat
// completions with an error chunk (no [DONE]). Under the Breaker such a
// stream reaches the SDK as the provider sent it, so that the SDK returns
// the provider's error, and counts by that error: a rate limit neither way
// (one Breaker that a failure opens stays closed), overloaded_error or
// server_error a failure. Read to its end it counted a failure whatever the
// error said; closed at the error (both SDKs stop there), neither way
// whatever it said.

// anthropicStreamThen answers with an Anthropic message stream that says
// "Hel", "lo", then ends with last; held, it then keeps the stream open
// until the client goes away, so that the SDK, which stops at an error
// event, closes a stream whose end it never read.
func anthropicStreamThen(last string, held bool) answer {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","+
			"\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"+
			"\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n")
		io.WriteString(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"+
			"\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
		for _, word := range []string{"Hel", "lo"} {
			io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"+
				"\"delta\":{\"type\":\"text_delta\",\"text\":\""+word+"\"}}\n\n")
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, last)
		if held {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}
}

// chatStreamThen answers with an OpenAI chat-completions stream that says
// "Hel", "lo", then ends with last; held, as anthropicStreamThen.
func chatStreamThen(last string, held bool) answer {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Hel", "lo"} {
			io.WriteString(w, streamChunk(word))
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, last)
		if held {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}
}

// endings are how a stream ended at its error reaches the SDK: its end
// read with the error, or the stream held open after it.
var endings = map[string]bool{"ended": false, "held open": true}

// assertCountedByItsError checks that a stream ended at its error reached
// the SDK as text and the provider's message, no io.ErrUnexpectedEOF, and
// counted a failure on br (ConsecutiveFailures 1) only when failure.
func assertCountedByItsError(t *testing.T, br *httpguard.Breaker, text string, err error, message string, failure bool) {
	t.Helper()
	require.Error(t, err)
	assert.NotErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Contains(t, err.Error(), message, "the provider's error")
	assert.Equal(t, "Hello", text)
	s := br.Stats()
	require.Len(t, s, 1)
	if failure {
		assert.Equal(t, httpguard.CircuitOpen, s[0].State, "the provider failed")
		return
	}
	assert.Equal(t, httpguard.CircuitClosed, s[0].State, "a rate limit opens no circuit")
	assert.Zero(t, s[0].Calls, "counts neither way")
}

func TestAnthropicReadsAStreamEndedByAnErrorEvent(t *testing.T) {
	for name, tc := range map[string]struct {
		errorType, message string
		failure            bool
	}{
		"rate_limit_error": {"rate_limit_error", "This request would exceed your organization's rate limit", false},
		"overloaded_error": {"overloaded_error", "Overloaded", true},
	} {
		for ending, held := range endings {
			t.Run(name+", "+ending, func(t *testing.T) {
				a := newAPI(t, anthropicStreamThen("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\""+tc.errorType+
					"\",\"message\":\""+tc.message+"\"},\"request_id\":\"req_1\"}\n\n", held))
				br, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 1})
				require.NoError(t, err)

				s := newAnthropic(a, guardedClient(t, br), anthropicoption.WithMaxRetries(0)).Messages.NewStreaming(context.Background(),
					anthropicMessageParams())
				var text strings.Builder
				for s.Next() {
					text.WriteString(s.Current().Delta.Text)
				}
				err = s.Err()
				require.NoError(t, s.Close())

				assertCountedByItsError(t, br, text.String(), err, tc.message, tc.failure)
			})
		}
	}
}

func TestOpenAIGoReadsAChatStreamEndedByAnErrorChunk(t *testing.T) {
	for name, tc := range map[string]struct {
		error, message string
		failure        bool
	}{
		"rate_limit_exceeded": {`{"message":"Rate limit reached for deepseek-v3.2","type":"tokens","param":null,"code":"rate_limit_exceeded"}`,
			"Rate limit reached for deepseek-v3.2", false},
		"server_error": {`{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}`,
			"The server had an error while processing your request.", true},
	} {
		for ending, held := range endings {
			t.Run(name+", "+ending, func(t *testing.T) {
				a := newAPI(t, chatStreamThen("data: {\"error\":"+tc.error+"}\n\n", held))
				br, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 1})
				require.NoError(t, err)

				s := newOpenAIGo(a, guardedClient(t, br), option.WithMaxRetries(0)).Chat.Completions.NewStreaming(context.Background(), openAIChat())
				var text strings.Builder
				for s.Next() {
					for _, ch := range s.Current().Choices {
						text.WriteString(ch.Delta.Content)
					}
				}
				err = s.Err()
				require.NoError(t, s.Close())

				assertCountedByItsError(t, br, text.String(), err, tc.message, tc.failure)
			})
		}
	}
}
