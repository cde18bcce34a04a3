package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A chat stream that reached its terminal event ([DONE], message_stop,
// response.completed) and then lost its connection, before the chunked
// body's last chunk, was answered in full: a caller that reads it to the
// end (anthropic-sdk-go reads to EOF) gets the transport's error after
// every event, and the Breaker counts the provider's answer a success, as
// it does when the caller closes the stream at its terminal event. It
// counted a failure: five such answers in a row opened the circuit of a
// provider that had answered each in full.
func TestBreakerCountsAStreamCutAfterItsTerminalEventAsASuccess(t *testing.T) {
	for name, tc := range map[string]struct {
		path   string
		events []string
	}{
		"openai":    {"/v1/chat/completions", []string{openAIChunk, openAIDone}},
		"anthropic": {"/v1/messages", append(append([]string{}, anthropicEvents...), anthropicStop)},
		"responses": {"/v1/responses", append(append([]string{}, responsesStreamStart...), responsesCompleted)},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, e := range tc.events {
					io.WriteString(w, e)
					w.(http.Flusher).Flush()
				}
				panic(http.ErrAbortHandler) // the connection breaks before the body's last chunk
			})
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
			c := clientFor(t, r.b)

			got, err := readStream(t, c, srv.URL, tc.path)

			require.Error(t, err, "the connection broke: the transport says so")
			assert.NotContains(t, err.Error(), "without its terminal event")
			assert.Equal(t, strings.Join(tc.events, ""), got, "every event came")
			s := r.stats(t)
			assert.Equal(t, CircuitClosed, s.State)
			assert.Equal(t, 1, s.Calls)
			assert.Zero(t, s.Failures, "the provider answered in full")
		})
	}
}

// A stream cut before its terminal event is still a failure, however it
// is cut.
func TestBreakerCountsAStreamCutBeforeItsTerminalEventAsAFailure(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, openAIChunk+"data: [DO")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

	_, err := readStream(t, clientFor(t, r.b), srv.URL, "/v1/chat/completions")

	require.Error(t, err)
	assert.Equal(t, CircuitOpen, r.stats(t).State)
}
