package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a stream that ends without its terminal event ([DONE],
// message_stop, response.completed) reaches the client as a cut (the
// Breaker reports it, ReverseProxy aborts the answer before its last
// chunk), but not when the upstream framed it by a Content-Length (a relay
// that buffers a stream whole, a cache): the proxy passed the length on,
// wrote every byte of it before aborting, and the client read a complete
// answer, a truncated stream its SDK took for the whole one.
func TestAStreamFramedByItsLengthAndCutReachesTheClientAsAnError(t *testing.T) {
	for _, tc := range []struct{ path, body, events string }{
		{"/v1/chat/completions", streamBody, `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}` + "\n\n"},
		{"/v1/responses", `{"model":"deepseek-v3.2","stream":true,"input":"hi"}`,
			"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n"},
		{"/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[]}`,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Length", strconv.Itoa(len(tc.events)))
				io.WriteString(w, tc.events)
			}))
			t.Cleanup(up.Close)
			r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
			resp, err := r.client.Post(r.URL+tc.path, "application/json", strings.NewReader(tc.body))
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			got, err := io.ReadAll(resp.Body)
			assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client sees the cut, never a clean end")
			assert.Equal(t, tc.events, string(got), "what came passes")
		})
	}
}

// A whole stream framed by its length still ends cleanly.
func TestAWholeStreamFramedByItsLengthEndsCleanly(t *testing.T) {
	events := `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}` + "\n\ndata: [DONE]\n\n"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(events)))
		io.WriteString(w, events)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	resp, body := r.post(t, "/v1/chat/completions", streamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, events, string(body))
}
