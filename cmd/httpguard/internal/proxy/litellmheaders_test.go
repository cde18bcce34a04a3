package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: LiteLLM, an upstream the proxy serves, passes on the
// provider's own headers prefixed llm_provider- (llm_provider-openai-organization,
// llm_provider-x-ratelimit-remaining-tokens): the proxy dropped the
// account's organization, project and rate limits from tenants' answers
// under their own names only, so through LiteLLM every tenant read them.
func TestTenantsDoNotSeeTheAccountThroughLiteLLMsProviderHeaders(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("llm_provider-openai-organization", "org-real-account")
		w.Header().Set("llm_provider-openai-project", "proj_real")
		w.Header().Set("llm_provider-anthropic-organization-id", "7f3c9d2e-real-org")
		w.Header().Set("llm_provider-x-ratelimit-remaining-tokens", "29957")
		w.Header().Set("llm_provider-anthropic-ratelimit-tokens-remaining", "29957")
		w.Header().Set("llm_provider-x-request-id", "req_1")
		// LiteLLM's own headers of its key and deployment: the account's.
		w.Header().Set("x-litellm-key-spend", "1234.5")
		w.Header().Set("x-litellm-key-max-budget", "5000")
		w.Header().Set("x-litellm-key-remaining-requests-gpt-4o", "99")
		w.Header().Set("x-litellm-model-api-base", "https://real-resource.openai.azure.com")
		w.Header().Set("x-litellm-call-id", "call_1")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	for _, h := range []string{"llm_provider-openai-organization", "llm_provider-openai-project", "llm_provider-anthropic-organization-id",
		"llm_provider-x-ratelimit-remaining-tokens", "llm_provider-anthropic-ratelimit-tokens-remaining",
		"x-litellm-key-spend", "x-litellm-key-max-budget", "x-litellm-key-remaining-requests-gpt-4o", "x-litellm-model-api-base"} {
		assert.Empty(t, resp.Header.Get(h), h)
	}
	assert.Equal(t, "req_1", resp.Header.Get("llm_provider-x-request-id"), "the rest passes")
	assert.Equal(t, "call_1", resp.Header.Get("x-litellm-call-id"), "the rest passes")
}

// Was a bug: an upstream's 1xx (103 Early Hints) reaches tenants with its
// headers as sent: the account's headers were dropped from the answer
// (ModifyResponse) but not from a 1xx before it, which ReverseProxy writes
// as it comes.
func TestTenantsDoNotSeeTheAccountInAnInformationalAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</x>; rel=preload")
		w.Header().Set("Openai-Organization", "org-real-account")
		w.Header().Set("x-ratelimit-remaining-tokens", "29957")
		w.Header().Set("x-litellm-key-spend", "1234.5")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	var hints []textproto.MIMEHeader
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints {
				hints = append(hints, h)
			}
			return nil
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer vk-chat")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, hints, 1, "the 103 reaches the tenant")
	assert.Equal(t, "</x>; rel=preload", hints[0].Get("Link"), "the rest passes")
	for _, h := range []string{"Openai-Organization", "X-Ratelimit-Remaining-Tokens", "X-Litellm-Key-Spend"} {
		assert.Empty(t, hints[0].Get(h), h)
	}
}
