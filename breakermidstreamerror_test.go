package httpguard

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An error in the middle of an Anthropic or OpenAI chat stream is followed
// by no terminal event: the stream reaches the reader as the error it is,
// and counts as a failure, whatever the error says (an Anthropic stream's
// error event carries no status; overloaded_error is its 529).
func TestBreakerCountsAMidStreamErrorWithoutItsTerminalEventAsAFailure(t *testing.T) {
	for name, tc := range map[string]struct {
		path   string
		events []string
	}{
		"anthropic overloaded_error": {"/v1/messages", append(append([]string{}, anthropicEvents[:2]...),
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")},
		"anthropic api_error": {"/v1/messages", append(append([]string{}, anthropicEvents[:2]...),
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n")},
		"openai chat error": {"/v1/chat/completions", []string{openAIChunk,
			"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"}},
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
