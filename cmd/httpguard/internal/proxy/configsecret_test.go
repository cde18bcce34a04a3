package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a gateway's own key, which only an upstream's headers can set
// (Portkey's x-portkey-api-key, Helicone's Helicone-Auth, Cloudflare AI
// Gateway's cf-aig-authorization, Azure API Management's
// Ocp-Apim-Subscription-Key), was not among the keys the proxy masks: a
// gateway that echoed it (in an error's message, a header, a 401 the
// access log keeps) showed it to every tenant and wrote it to the log.
func TestAGatewayKeyInAnUpstreamsHeadersIsMasked(t *testing.T) {
	const (
		portkey  = "pk-live-0123456789abcdefghij"
		helicone = "sk-helicone-0123456789abcdefghij"
	)
	for _, status := range []int{http.StatusOK, http.StatusUnauthorized} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Debug-Key", r.Header.Get("X-Portkey-Api-Key"))
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"message":"keys `+r.Header.Get("X-Portkey-Api-Key")+` and `+r.Header.Get("Helicone-Auth")+
				`","type":"invalid_request_error"},"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
		}))
		t.Cleanup(up.Close)
		for _, keyed := range []bool{true, false} {
			c := Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"),
				Header: http.Header{"X-Portkey-Api-Key": {portkey}, "Helicone-Auth": {"Bearer " + helicone}, "X-Portkey-Provider": {"openai"}}}}}
			if keyed {
				c.Upstreams[0].KeyEnv, c.Getenv = "OPENAI_KEY", realKeys
				c.Tenants = []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}
			}
			r := start(t, c)
			resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
			require.Equal(t, status, resp.StatusCode, string(body))
			r.lastLog(t, 1)
			for _, secret := range []string{portkey, helicone} {
				assert.NotContains(t, string(body), secret, "status %d, tenants %v", status, keyed)
				assert.NotContains(t, resp.Header.Get("X-Debug-Key"), secret, "status %d, tenants %v", status, keyed)
				assert.NotContains(t, r.logs.String(), secret, "status %d, tenants %v", status, keyed)
			}
			if status == http.StatusOK {
				assert.Contains(t, string(body), "keys ****", "the answer is otherwise the upstream's")
			}
		}
	}
}

// A fallback's headers are the operator's too: a gateway key there is
// masked, as the upstream's, and a header that carries none is not.
func TestAGatewayKeyInAFallbacksHeadersIsMasked(t *testing.T) {
	const key = "sk-helicone-fallback-0123456789"
	primary := faultServer(t, httpguardtest.Config{})
	second := faultServer(t, httpguardtest.Config{})
	c := failoverConfig(t, primary, second)
	c.Upstreams[0].Fallbacks[0].Header = http.Header{"Helicone-Auth": {"Bearer " + key}, "X-Team": {"search-team-0123456789"}}
	p, err := New(c)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	assert.Equal(t, "Bearer "+strings.Repeat("*", len(key))+" search-team-0123456789", p.redact.text("Bearer "+key+" search-team-0123456789"))
}

// Was a bug: Portkey's x-portkey-config may carry an inline config whose
// api_key (or a provider's keys: aws_secret_access_key, a Vertex service
// account's private_key) is the operator's secret, but only whole words
// of a credential header's value were masked: the config as one word, or
// a key with the quote and comma around it, never the key alone that a
// gateway echoes ("Incorrect API key provided: sk-…").
func TestAKeyInAPortkeyConfigInAnUpstreamsHeadersIsMasked(t *testing.T) {
	const (
		apiKey  = "sk-portkey-inline-0123456789abcdef"
		awsKey  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
		private = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
	)
	configs := map[string][]string{
		`{"provider":"openai","api_key":"` + apiKey + `","retry":{"attempts":3}}`: {apiKey},
		`{"strategy": {"mode": "fallback"}, "targets": [{"provider": "openai", "api_key": "` + apiKey + `"},` +
			` {"provider": "bedrock", "aws_secret_access_key": "` + awsKey + `"},` +
			` {"provider": "vertex-ai", "vertex_service_account_json": "{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n` + private + `\\n-----END PRIVATE KEY-----\\n\"}"}]}`: {apiKey, awsKey, private},
	}
	for config, secrets := range configs {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided: `+apiKey+`, `+awsKey+`, `+private+`","type":"invalid_request_error"}}`)
		}))
		t.Cleanup(up.Close)
		for _, keyed := range []bool{true, false} {
			c := Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), Header: http.Header{"X-Portkey-Config": {config}}}}}
			if keyed {
				c.Upstreams[0].KeyEnv, c.Getenv = "OPENAI_KEY", realKeys
				c.Tenants = []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}
			}
			r := start(t, c)
			resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, string(body))
			r.lastLog(t, 1)
			for _, secret := range secrets {
				assert.NotContains(t, string(body), secret, "config %s, tenants %v", config, keyed)
				assert.NotContains(t, r.logs.String(), secret, "config %s, tenants %v", config, keyed)
			}
		}
	}
}
