package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a streaming request to an OpenAI-style /chat/completions
// whose body had a member Anthropic's Messages API uses (a top-level
// system, stop_sequences, anthropic_version: extra members that
// OpenAI-compatible servers ignore) was taken for Anthropic's, and sent
// without stream_options.include_usage: the stream came without usage and
// was charged its whole reservation. The path says which API it is.
func TestBudgetAsksAChatStreamForUsageWhateverMembersItsBodyHas(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 5})
	require.NoError(t, err)
	defer srv.Close()
	for name, extra := range map[string]string{
		"system":            `"system":"Answer briefly.",`,
		"stop_sequences":    `"stop_sequences":["\n\n"],`,
		"anthropic_version": `"anthropic_version":"vertex-2023-10-16",`,
	} {
		t.Run(name, func(t *testing.T) {
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, OnSettle: func(s Settlement) { got = s }})
			body := `{"model":"m",` + extra + `"max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
			client := &http.Client{Transport: Chain(srv.Client().Transport, b)}
			resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
			require.NoError(t, err)
			stream, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", stream)

			reqs := srv.Requests()
			assert.Contains(t, string(reqs[len(reqs)-1].Body), `"stream_options":{"include_usage":true}`, "the upstream is asked for usage")
			assert.True(t, got.UsageKnown, "the stream's usage is read")
			assert.Less(t, got.Charged, got.Reserved, "charged its usage, not its reservation")
			assert.Equal(t, int64(5), got.Usage.OutputTokens)
			assert.NotContains(t, string(stream), `"usage":{`, "the caller, who did not ask, gets no usage chunk")
			assert.Contains(t, string(stream), "data: [DONE]")
		})
	}
}

// A request to Anthropic's Messages API goes as it was sent: its streams
// report usage without being asked, and it knows no stream_options.
func TestBudgetLeavesAnAnthropicStreamsBodyAlone(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{CompletionTokens: 5})
	require.NoError(t, err)
	defer srv.Close()
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, OnSettle: func(s Settlement) { got = s }})
	client := &http.Client{Transport: Chain(srv.Client().Transport, b)}
	for _, tc := range []struct{ path, body string }{
		{"/messages", `{"model":"m","system":"Answer briefly.","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hello"}]}`},
		{"/messages", `{"model":"m","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hello"}]}`},
	} {
		resp, err := client.Post(srv.BaseURL()+tc.path, "application/json", strings.NewReader(tc.body))
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		reqs := srv.Requests()
		assert.Equal(t, tc.body, string(reqs[len(reqs)-1].Body), "sent as it was")
		assert.True(t, got.UsageKnown)
	}
}

// The path decides, as it is sent and as it is decoded: a server may route
// /v1/messages%2F..%2Fcompletions to Anthropic's messages, or
// /v1/chat%2Fcompletions nowhere it knows.
func TestAcceptsStreamOptionsReadsThePathSentAndDecoded(t *testing.T) {
	for target, want := range map[string]bool{
		"http://h/v1/chat/completions":                   true,
		"http://h/v1/completions":                        true,
		"http://h/v1/messages":                           false,
		"http://h/v1/responses":                          false,
		"http://h/v1/chat%2Fcompletions":                 false,
		"http://h/v1/messages%2F..%2Fcompletions":        false,
		"http://h/v1/messages?x=/chat/completions":       false,
		"http://h/openai/deployments/d/chat/completions": true,
	} {
		req, err := http.NewRequest("POST", target, nil)
		require.NoError(t, err)
		assert.Equal(t, want, acceptsStreamOptions(req), target)
	}
	req, err := http.NewRequest("POST", "http://h/v1/chat/completions", nil)
	require.NoError(t, err)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	assert.False(t, acceptsStreamOptions(req), "a request in Anthropic's format")
}
