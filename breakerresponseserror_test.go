package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// responsesErrorEvent is a Responses stream's error event whose members,
// after its type, are members: the documented shape has the error's code,
// message and param there; OpenAI sends them in an error object instead.
func responsesErrorEvent(members string) string {
	return "event: error\ndata: {\"type\":\"error\"," + members + ",\"sequence_number\":2}\n\n"
}

// A Responses stream that fails may end with an error event alone, no
// response.failed after it: OpenAI ends a stream so for a rate limit or a
// context too long, its code, message and param in an error object or, as
// its reference documents them, beside the event's type. Such a stream is
// whole: it reaches the reader as it came, and counts as a chat stream's
// error before its end does (see errorFault). It was taken for a stream
// cut short: a failure whatever the error said, so that a burst of rate
// limits, the Limiter's signal, opened the circuit, and the reader got an
// error wrapping io.ErrUnexpectedEOF. A response.failed after the error
// event is the stream's end, and decides.
func TestBreakerCountsAResponsesErrorEventByWhoseFaultItWas(t *testing.T) {
	longCode := `"code":"server_error` + strings.Repeat(" ", 64) + `","message":"x"`
	for name, tc := range map[string]struct {
		events  []string
		failure bool // else it counts neither way
	}{
		"server_error":               {[]string{responsesErrorEvent(`"code":"server_error","message":"The server had an error while processing your request.","param":null`)}, true},
		"server_error, escaped":      {[]string{responsesErrorEvent(`"message":"a \"quoted\" message","code":"server\u005ferror","param":null`)}, true},
		"code \"503\"":               {[]string{responsesErrorEvent(`"code":"503","message":"x","param":null`)}, true},
		"code 500":                   {[]string{responsesErrorEvent(`"code":500,"message":"x","param":null`)}, true},
		"code before the type":       {[]string{"data: {\"code\":\"server_error\",\"message\":\"x\",\"type\":\"error\"}\n\n"}, true},
		"in an error object":         {[]string{responsesErrorEvent(`"error":{"type":"server_error","code":"server_error","message":"x","param":null}`)}, true},
		"error object, code 502":     {[]string{responsesErrorEvent(`"error":{"message":"x","code":502}`)}, true},
		"rate_limit_exceeded":        {[]string{responsesErrorEvent(`"code":"rate_limit_exceeded","message":"Rate limit reached","param":null`)}, false},
		"insufficient_quota":         {[]string{responsesErrorEvent(`"code":"insufficient_quota","message":"You exceeded your current quota","param":null`)}, false},
		"invalid_request":            {[]string{responsesErrorEvent(`"code":"invalid_request","message":"x","param":"input"`)}, false},
		"code 429":                   {[]string{responsesErrorEvent(`"code":429,"message":"x","param":null`)}, false},
		"code null":                  {[]string{responsesErrorEvent(`"code":null,"message":"x","param":null`)}, false},
		"no code":                    {[]string{responsesErrorEvent(`"message":"x"`)}, false},
		"a code in another case":     {[]string{responsesErrorEvent(`"Code":"server_error","message":"x"`)}, false},
		"a code too long to capture": {[]string{responsesErrorEvent(longCode)}, false},
		"error object, rate_limit_exceeded": {[]string{responsesErrorEvent(`"error":{"type":"tokens","code":"rate_limit_exceeded",` +
			`"headers":{"x-ratelimit-remaining-tokens":"4735","x-ratelimit-reset-tokens":"50.529s"},"message":"Rate limit reached for gpt-4o","param":null}`)}, false},
		"error object, too_many_requests": {[]string{responsesErrorEvent(`"error":{"type":"too_many_requests","code":"too_many_requests","message":"Too Many Requests","param":null}`)}, false},
		"error object, context_length_exceeded": {[]string{responsesErrorEvent(`"error":{"type":"invalid_request_error","code":"context_length_exceeded",` +
			`"message":"Your input exceeds the context window of this model.","param":"input"}`)}, false},
		"both shapes, as a relay sends them": {[]string{responsesErrorEvent(`"code":"rate_limit_exceeded","message":"x","param":null,` +
			`"error":{"type":"tokens","code":"rate_limit_exceeded","message":"x","param":null}`)}, false},
		"a rate limit, then response.failed for server_error": {[]string{responsesErrorEvent(`"code":"rate_limit_exceeded","message":"x","param":null`),
			responsesFailedWith(`"error":{"code":"server_error","message":"x"}`)}, true},
		"server_error, then response.failed for a rate limit": {[]string{responsesErrorEvent(`"code":"server_error","message":"x","param":null`),
			responsesFailedWith(`"error":{"code":"rate_limit_exceeded","message":"x"}`)}, false},
	} {
		t.Run(name, func(t *testing.T) {
			assertEndedStreamCounts(t, "/v1/responses", append(append([]string{}, responsesStreamStart...), tc.events...), tc.failure)
		})
	}
}

// A Responses stream that goes on after its error event did not end there:
// cut short after the event that followed, it reaches the reader as the
// error it is, and counts as a failure whatever the error said.
func TestBreakerCountsAResponsesStreamThatGoesOnAfterItsErrorEventAsCut(t *testing.T) {
	delta := responsesStreamStart[1]
	for name, events := range map[string][]string{
		"a delta after it":       {delta, responsesErrorEvent(`"code":"rate_limit_exceeded","message":"x","param":null`), delta},
		"a line that is no JSON": {responsesErrorEvent(`"code":"rate_limit_exceeded","message":"x","param":null`), "data: x\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			events = append(append([]string{}, responsesStreamStart...), events...)
			srv := sseServer(t, events...)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

			got, err := readStream(t, clientFor(t, r.b), srv.URL, "/v1/responses")

			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			assert.Equal(t, strings.Join(events, ""), got)
			assert.Equal(t, CircuitOpen, r.stats(t).State)
		})
	}
}

// holdingAfter is a server that streams events and then holds the stream
// open until its test ends: a reader that stops at the last event has not
// seen the stream's end.
func holdingAfter(t *testing.T, events []string) *server {
	t.Helper()
	done := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			io.WriteString(w, e)
		}
		w.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(done) })
	return srv
}
