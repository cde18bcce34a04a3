package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a client's Expect: 100-continue (curl sends it with a large
// body) went on to the upstream, although the proxy had read the whole
// body already (its server answered the 100 Continue). The transport then
// held every attempt's body until the upstream answered 100 Continue, up
// to its ExpectContinueTimeout (a second): an upstream that never sends
// one (a server or relay that reads the body without answering the
// expectation) cost each attempt a second, and one that does sent the
// client a second 100 Continue, after its body.
func TestExpectContinueIsNotSentUpstream(t *testing.T) {
	expects := make(chan string, 2)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		expects <- r.Header.Get("Expect")
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	for _, r := range []*running{startBudgetedTenant(t, up.URL), start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})} {
		resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat", "Expect", "100-continue")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		assert.Empty(t, <-expects, "the upstream was asked to expect a body the proxy holds whole")
	}
}
