package proxy

// Found by the seventh adversarial review; each test failed before its fix.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// relayRequest is what the relays below read of a request body.
type relayRequest struct {
	Model    string
	Messages []struct{ Content string }
	// LiteLLM's fallbacks by model group, [{"group": ["fallback", ...]}].
	Fallbacks              []map[string][]string
	ContextWindowFallbacks []map[string][]string `json:"context_window_fallbacks"`
	// LiteLLM merges extra_body into what it sends, over the rest.
	ExtraBody struct{ Model string } `json:"extra_body"`
}

// pathModelServer is a loopback server running each chat completion on
// the model run says its path and body name (false: not found), which
// answers naming the model's version (as Azure and LiteLLM do, not the
// name asked for) with usage, and records the models it ran.
func pathModelServer(t *testing.T, usage string, run func(path string, body relayRequest) (string, bool)) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body relayRequest
		json.NewDecoder(r.Body).Decode(&body)
		model, ok := run(r.URL.Path, body)
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		ran = append(ran, model)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"`+model+`-2024-11-20","choices":[],"usage":`+usage+`}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ran...) }
}

// azureServer is a loopback Azure OpenAI: the deployment its path names
// runs each request, whatever model the body names.
func azureServer(t *testing.T) (*httptest.Server, func() []string) {
	return pathModelServer(t, `{"prompt_tokens":5,"completion_tokens":1}`, func(path string, _ relayRequest) (string, bool) {
		parts := strings.Split(path, "/") // "", openai, deployments, NAME, chat, completions
		if len(parts) < 4 || parts[1] != "openai" || !strings.EqualFold(parts[2], "deployments") {
			return "", false
		}
		return parts[3], true
	})
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

// liteLLMServer is a loopback LiteLLM proxy: it serves chat completions at
// /chat/completions, /engines/{model}/chat/completions and
// /openai/deployments/{model}/chat/completions, where {model} may hold
// slashes and wins over the body's model.
func liteLLMServer(t *testing.T) (*httptest.Server, func() []string) {
	return pathModelServer(t, `{"prompt_tokens":10,"completion_tokens":1000}`, func(path string, body relayRequest) (string, bool) {
		model := body.Model
		path, ok := strings.CutSuffix(path, "/chat/completions")
		for _, marker := range []string{"/engines/", "/openai/deployments/"} {
			if m, found := strings.CutPrefix(path, marker); found {
				model = m
			}
		}
		return model, ok
	})
}

// Was a bug: behind a LiteLLM upstream, a path naming the model (LiteLLM's
// /engines/{model}/… and /openai/deployments/{model}/…, whose model may
// span segments) ran that model whatever the body named: the model check
// and the budgets read the body's, or the deployment's first segment.
func TestAModelNamedInTheUpstreamsPathIsCheckedAndPriced(t *testing.T) {
	gpt4o := httpguard.Price{Input: 250 * httpguard.Cent, Output: 10 * httpguard.Dollar}
	prices := httpguard.PriceTable{"deepseek-v3.2": testPrices["deepseek-v3.2"], "gpt-4o": gpt4o, "openai/gpt-4o": gpt4o,
		httpguard.FallbackModel: testPrices["deepseek-v3.2"]}
	const cheap = `{"model":"deepseek-v3.2","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	paths := []string{"/v1/engines/gpt-4o/chat/completions", "/v1/openai/deployments/openai/gpt-4o/chat/completions"}

	t.Run("models", func(t *testing.T) {
		up, ran := liteLLMServer(t)
		r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
			Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
		for _, path := range paths {
			r.post(t, path, cheap, "Authorization", "Bearer vk-chat")
		}
		resp, body := r.post(t, "/v1/chat/completions", cheap, "Authorization", "Bearer vk-chat")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		assert.Equal(t, []string{"deepseek-v3.2"}, ran(), "the models the tenant ran")
	})
	t.Run("budget", func(t *testing.T) {
		up, ran := liteLLMServer(t)
		limit := 5 * httpguard.Cent // four answers of gpt-4o's
		r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
			Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
		for range 10 {
			for _, path := range paths {
				r.post(t, path, cheap, "Authorization", "Bearer vk-chat")
			}
		}
		var billed httpguard.Money
		for _, m := range ran() {
			billed += prices[m].Cost(httpguard.Usage{InputTokens: 10, OutputTokens: 1000}) // what liteLLMServer reports
		}
		assert.LessOrEqual(t, billed, limit, "billed for %d requests to %v", len(ran()), ran())
	})
}

// Was a bug: behind a LiteLLM upstream, fallback models named in a form
// the proxy did not read ran when the body's model failed: LiteLLM's
// fallbacks by model group ([{"deepseek-v3.2": ["gpt-4.1"]}], whose
// objects name no "model") passed a tenant's model list, and
// context_window_fallbacks passed both the list and the budgets, which
// priced the body's model while gpt-4.1 answered a prompt longer than its
// context window.
func TestFallbacksARelayReadsAreCheckedOrRefused(t *testing.T) {
	long := strings.Repeat("a long prompt ", 20)
	var bodies []string
	for _, fallbacks := range []string{`"fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}]`, `"context_window_fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}]`} {
		bodies = append(bodies, `{"model":"deepseek-v3.2","max_tokens":1000,`+fallbacks+`,"messages":[{"role":"user","content":"`+long+`"}]}`)
	}
	relayRunsNoOtherModel(t, contextWindowServer, bodies)
}

// relayRunsNoOtherModel sends bodies naming deepseek-v3.2 to a relay
// (made by relay, billing 80 input and 1000 output tokens an answer), from
// a tenant allowed only that model, which must run none of them (each
// names gpt-4.1 some other way), and from a tenant with a budget, whose
// limit must hold against what the relay bills.
func relayRunsNoOtherModel(t *testing.T, relay func(*testing.T) (*httptest.Server, func() []string), bodies []string) {
	gpt41 := httpguard.Price{Input: 2 * httpguard.Dollar, Output: 8 * httpguard.Dollar}
	prices := httpguard.PriceTable{"deepseek-v3.2": testPrices["deepseek-v3.2"], "gpt-4.1": gpt41}
	proxy := func(t *testing.T, tenant Tenant) (*running, func() []string) {
		up, ran := relay(t)
		return start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
			Tenants: []Tenant{tenant}}), ran
	}
	t.Run("models", func(t *testing.T) {
		r, ran := proxy(t, Tenant{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}})
		for _, body := range bodies {
			r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
		}
		assert.Empty(t, ran(), "the models the tenant ran")
	})
	t.Run("budget", func(t *testing.T) {
		limit := 25 * httpguard.Cent / 10 // three answers of gpt-4.1's
		r, ran := proxy(t, Tenant{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}})
		for range 10 {
			for _, body := range bodies {
				r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
			}
		}
		var billed httpguard.Money
		for _, m := range ran() {
			billed += prices[m].Cost(httpguard.Usage{InputTokens: 80, OutputTokens: 1000}) // what the relay reports
		}
		assert.LessOrEqual(t, billed, limit, "billed for %d requests to %v", len(ran()), ran())
	})
}

// contextWindowServer is a loopback LiteLLM whose deepseek-v3.2 has a
// context window of 100 characters: a longer prompt fails there, and the
// first fallback the body names for it runs instead.
func contextWindowServer(t *testing.T) (*httptest.Server, func() []string) {
	return pathModelServer(t, `{"prompt_tokens":80,"completion_tokens":1000}`, func(path string, body relayRequest) (string, bool) {
		if len(body.Messages) == 0 || len(body.Messages[0].Content) <= 100 {
			return body.Model, true
		}
		for _, group := range append(body.ContextWindowFallbacks, body.Fallbacks...) {
			if fb := group[body.Model]; len(fb) > 0 {
				return fb[0], true
			}
		}
		return "", false
	})
}

// Was a bug: LiteLLM merges a request's extra_body into what it sends to
// the provider, over the fields the proxy and the budgets read
// (BerriAI/litellm#31118): {"model": "deepseek-v3.2", "extra_body":
// {"model": "gpt-4.1"}} ran gpt-4.1, past a tenant's model list and
// charged at deepseek-v3.2's price.
func TestExtraBodyARelayMergesIsRefused(t *testing.T) {
	relayRunsNoOtherModel(t, func(t *testing.T) (*httptest.Server, func() []string) {
		return pathModelServer(t, `{"prompt_tokens":80,"completion_tokens":1000}`, func(_ string, body relayRequest) (string, bool) {
			if body.ExtraBody.Model != "" {
				return body.ExtraBody.Model, true
			}
			return body.Model, true
		})
	}, []string{`{"model":"deepseek-v3.2","max_tokens":1000,"extra_body":{"model":"gpt-4.1"},"messages":[{"role":"user","content":"hi"}]}`})
}

// An Azure request whose body names no model is refused by an open circuit
// with the time until it lets a probe through: the circuit is the body's
// model's, not the deployment's.
func TestAnAzureCircuitOpenSaysWhenItReopens(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY",
		Breaker: &BreakerSpec{ConsecutiveFailures: 2, MinCalls: -1, CoolDown: time.Minute}}}, Getenv: realKeys,
		Retry:   RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	var resp *http.Response
	for range 3 {
		resp, _ = r.post(t, "/openai/deployments/gpt-4o/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, "Api-Key", "vk-chat")
	}
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "60", resp.Header.Get("Retry-After"))
}

// A read of a path naming a model runs none: it is not checked as one.
func TestAReadOfAPathNamingAModelIsNotCheckedAsOne(t *testing.T) {
	up, _ := azureServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}, Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp := r.get(t, "/openai/deployments/gpt-4o/chat/completions", "Api-Key", "vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "sent to the upstream, which answers every path it knows")
}
