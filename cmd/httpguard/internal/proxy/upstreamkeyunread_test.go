package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: the key in the variable --upstream-key-env names
// (HTTPGUARD_UPSTREAM_KEY by default) is read with tenants only, but a
// proxy without tenants started without a word while the variable held
// one: an operator who set it for the sidecar to add the key saw each
// client's own key, or none, reach the upstream, and learnt it from the
// provider's 401s. A config file's key_env in the same case was named in a
// warning; --upstream's variable, always named, is now named when it holds
// a key.
func TestTheUpstreamKeyVariableWithoutTenantsIsNamedAsUnreadWhenItHoldsAKey(t *testing.T) {
	const realKey = "sk-real-upstream-0123456789"
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(up.Close)
	flagUpstream := []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "HTTPGUARD_UPSTREAM_KEY"}}
	r := start(t, Config{Upstreams: flagUpstream, Getenv: func(string) string { return realKey }})
	logs := r.logs.String()
	assert.Contains(t, logs, "is read with tenants only: without them each client's own key passes through to the upstream")
	assert.Contains(t, logs, `"variable":"HTTPGUARD_UPSTREAM_KEY"`)
	assert.NotContains(t, logs, realKey)

	// What the warning says: the client's key, not the variable's, is sent.
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "Bearer sk-client", <-got)

	unset := start(t, Config{Upstreams: flagUpstream})
	assert.NotContains(t, unset.logs.String(), "tenants only", "the variable unset: nothing is ignored")
}
