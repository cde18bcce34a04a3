package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: LiteLLM sends a header prefixed x-pass- on to the provider
// with the prefix stripped, whatever its settings: x-pass-anthropic-beta:
// context-1m-… has the provider bill a long prompt at its 1M-context
// prices, which the budget, reading anthropic-beta, never saw (it priced
// the standard ones), and x-pass-openai-organization chose which
// organization of the real key's account is billed, as the
// OpenAI-Organization the proxy drops would. They reached the upstream.
func TestLiteLLMsPassedOnHeadersDoNotReachTheUpstream(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-pass-") {
				seen = append(seen, k)
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	upstream := []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}
	keyed := start(t, Config{Upstreams: upstream, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	shared := start(t, Config{Upstreams: upstream, Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	for _, r := range []*running{keyed, shared} {
		resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat",
			"X-Pass-Anthropic-Beta", "context-1m-2025-08-07", "x-pass-openai-organization", "org-other")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	}
	assert.Empty(t, seen)
}
