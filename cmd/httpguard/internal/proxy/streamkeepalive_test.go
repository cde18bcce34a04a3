package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the proxy asks an OpenAI-style stream for its usage, and the
// Budget held back the event being read to hide the usage chunk: a bare
// comment line an upstream flushed while its model thought (": keep-alive",
// no blank line after it) reached the client only with the next chunk, so
// the client's idle timeout, which it is sent against, went off anyway.
func TestAKeepAliveCommentReachesTheClientAsItComes(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"first"}}],"usage":null}`+"\n\n: keep-alive\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, err := r.client.Post(r.URL+"/v1/chat/completions", "application/json", strings.NewReader(streamBody))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- line
		}
	}()
	for _, want := range []string{`"first"`, "", ": keep-alive"} {
		select {
		case line := <-lines:
			require.Contains(t, line, want)
		case <-time.After(time.Second):
			t.Fatalf("%q not read within a second of being flushed", want)
		}
	}
	close(release)
	var rest strings.Builder
	for line := range lines {
		rest.WriteString(line)
	}
	assert.Equal(t, "data: [DONE]\n\n", rest.String(), "the usage chunk the proxy asked for is hidden")
	assert.Equal(t, testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 2}), r.budget.Spent())
}

// A stream request to /v1/chat/completions whose body has members of
// Anthropic's (system, stop_sequences) is OpenAI's chat by its path: the
// proxy asks for its usage and charges it, not the reservation.
func TestAChatStreamWithAnthropicMembersIsChargedItsUsage(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, body := r.post(t, "/v1/chat/completions",
		`{"model":"deepseek-v3.2","system":"Answer briefly.","stop_sequences":["\n\n"],"max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.NotContains(t, string(body), `"choices":[]`)
	assert.Contains(t, string(srv.Requests()[0].Body), `"include_usage":true`)
	st := srv.Stats()
	billed := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: st.PromptTokens, OutputTokens: st.CompletionTokens})
	assert.Equal(t, billed, r.budget.Spent())
}
