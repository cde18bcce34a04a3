package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: an upstream whose headers hold a gateway's key (Portkey's
// x-portkey-api-key and virtual key, Helicone-Auth) is spent for every
// client when there are no tenants, a key of their own or not; the proxy
// started without a word. It now logs a warning naming the upstream (not
// the credential), and Unguarded lists it for the command, which refuses
// it on an address other than loopback.
func TestAnUpstreamWhoseHeadersHoldACredentialWithoutTenantsIsNamed(t *testing.T) {
	const gatewayKey = "pk-operator-0123456789abcdef"
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Header.Get("X-Portkey-Api-Key")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(up.Close)
	c := Config{Upstreams: []Upstream{
		{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), Header: http.Header{"X-Portkey-Api-Key": {gatewayKey}, "X-Portkey-Provider": {"openai"}}},
		{Prefix: "/plain", URL: mustURL(t, up.URL+"/v1"), Header: http.Header{"X-Portkey-Provider": {"openai"}}}}}
	r := start(t, c)
	assert.Equal(t, []string{"/v1"}, r.Unguarded())
	logs := r.logs.String()
	assert.Contains(t, logs, "an upstream's headers hold a credential and there are no tenants: any client that reaches the proxy spends on it")
	assert.Contains(t, logs, `"upstream":"/v1"`)
	assert.NotContains(t, logs, `"upstream":"/plain"`)
	assert.NotContains(t, logs, gatewayKey)

	// What the warning says: a client without any key is served on it.
	resp, out := r.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, gatewayKey, <-got)

	c.Tenants = []Tenant{{Name: "a", KeySHA256: keyHash("vk-a")}}
	c.Upstreams[0].KeyEnv, c.Upstreams[1].KeyEnv, c.Getenv = "OPENAI_KEY", "OPENAI_KEY", realKeys
	keyed := start(t, c)
	assert.Empty(t, keyed.Unguarded(), "tenants guard it")
	assert.NotContains(t, keyed.logs.String(), "there are no tenants")
}

// A config file's key_env without tenants is not read: the client's own
// key passes through. The proxy says so at start rather than leave the
// operator to learn it from the provider's 401s.
func TestAConfigFilesKeyEnvWithoutTenantsIsNamedAsUnread(t *testing.T) {
	f, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://127.0.0.1:1/v1\n    key_env: OPENAI_KEY\n"), "p.yaml")
	require.NoError(t, err)
	r := start(t, Config{Upstreams: f.Upstreams, Getenv: realKeys})
	logs := r.logs.String()
	assert.Contains(t, logs, "key_env is read with tenants only: without them each client's own key passes through to the upstream")
	assert.Contains(t, logs, `"at":"p.yaml:2"`)
	assert.NotContains(t, logs, "sk-real-openai")

	quiet := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, "http://127.0.0.1:1/v1"), KeyEnv: "HTTPGUARD_UPSTREAM_KEY"}}})
	assert.NotContains(t, quiet.logs.String(), "key_env", "--upstream always names a variable: no warning")
}
