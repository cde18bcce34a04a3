package proxy

// Found by the seventh adversarial review; each test failed before its fix.

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

// azureServer is a loopback Azure OpenAI: it runs each chat completion on
// the deployment its path names, whatever model the body names, answers
// naming the model's version (as Azure does, not the deployment), and
// records the deployments it ran.
func azureServer(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		parts := strings.Split(r.URL.Path, "/") // "", openai, deployments, NAME, chat, completions
		if len(parts) < 4 || parts[1] != "openai" || !strings.EqualFold(parts[2], "deployments") {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		ran = append(ran, parts[3])
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"`+parts[3]+`-2024-11-20","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ran...) }
}

// Was a bug: a tenant limited to some models reached any Azure deployment,
// which runs the request whatever model its body names: the model check
// read the body alone.
func TestATenantsModelsHoldForTheAzureDeploymentItsPathNames(t *testing.T) {
	up, ran := azureServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	for _, path := range []string{"/openai/deployments/gpt-4o/chat/completions", "/openai/Deployments/gpt-4o/chat/completions"} {
		resp, body := r.post(t, path+"?api-version=2024-10-21", chatBody, "Api-Key", "vk-chat")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s: %s", path, body)
	}
	resp, body := r.post(t, "/openai/deployments/deepseek-v3.2/chat/completions?api-version=2024-10-21", `{"messages":[{"role":"user","content":"hi"}]}`, "Api-Key", "vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the deployment names the model a body without one runs: %s", body)
	assert.Equal(t, []string{"deepseek-v3.2"}, ran(), "the deployments the tenant ran")
}

// Was a bug: a deployment escaped in the path (gpt%2D4o) was priced by the
// Budget as spelled, at the "*" entry, and run by Azure decoded, at the
// deployment's dearer price: a tenant's spend passed its limit by the
// difference.
func TestAnEscapedAzureDeploymentIsNotPricedAsAnother(t *testing.T) {
	up, ran := azureServer(t)
	dear := httpguard.Price{Input: 2500 * httpguard.Dollar, Output: 10000 * httpguard.Dollar}
	prices := httpguard.PriceTable{"gpt-4o": dear, httpguard.FallbackModel: {Input: httpguard.Cent, Output: httpguard.Cent}}
	limit := 5 * httpguard.Cent // two requests at the deployment's price
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
	for range 20 {
		r.post(t, "/openai/deployments/gpt%2D4o/chat/completions?api-version=2024-10-21", `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`, "Api-Key", "vk-chat")
	}
	var billed httpguard.Money
	for _, d := range ran() {
		billed += prices[d].Cost(httpguard.Usage{InputTokens: 5, OutputTokens: 1}) // what azureServer reports
	}
	assert.LessOrEqual(t, billed, limit, "billed for %d requests to %v", len(ran()), ran())
}
