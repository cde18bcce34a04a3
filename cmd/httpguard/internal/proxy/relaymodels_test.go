package proxy

// Models a relay runs that a body's "model" does not name alone, found by
// an attacker's review of the proxy. Each test asserts the promise (what
// the upstream may bill stays within the budget's Limit; a tenant runs
// only its models), not the implementation.

import (
	"encoding/json"
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

// huntLiteLLM is a loopback LiteLLM proxy, as its proxy_server.py and
// route_llm_request.py serve chat completions:
//
//   - chat_completion(request, fastapi_response, model: Optional[str] = None, …)
//     is mounted at /v1/chat/completions and /chat/completions too, where
//     FastAPI takes model from the query string, and
//     common_processing_pre_call_logic sets
//     data["model"] = completion_model or user_model or model or data["model"]:
//     ?model= wins over the body's model;
//   - route_request runs a model holding commas as a batch:
//     llm_router.abatch_completion(models=model.split(",")) answers a JSON
//     list of one completion per model (or, with "fastest_response": true,
//     the fastest alone, the others cancelled after they were sent).
//
// Every model run is billed 10 input and 1000 output tokens, and each
// answer reports that usage and the model's version as its "model".
func huntLiteLLM(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/chat/completions") {
			http.NotFound(w, r)
			return
		}
		var body struct {
			Model           string
			FastestResponse bool `json:"fastest_response"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		model := body.Model
		if q := r.URL.Query().Get("model"); q != "" {
			model = q // "or model  # for azure deployments", before data["model"]
		}
		models := []string{model}
		if strings.Contains(model, ",") {
			models = strings.Split(model, ",")
			for i := range models {
				models[i] = strings.TrimSpace(models[i])
			}
		}
		var answers []string
		for _, m := range models {
			mu.Lock()
			ran = append(ran, m) // sent to the provider: billed
			mu.Unlock()
			answers = append(answers, `{"object":"chat.completion","model":"`+m+`-2024-11-20",`+
				`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
				`"usage":{"prompt_tokens":10,"completion_tokens":1000,"total_tokens":1010}}`)
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case len(answers) == 1 || body.FastestResponse:
			io.WriteString(w, answers[0])
		default:
			io.WriteString(w, "["+strings.Join(answers, ",")+"]")
		}
	}))
	t.Cleanup(up.Close)
	return up, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ran...) }
}

var huntGPT4o = httpguard.Price{Input: 250 * httpguard.Cent, Output: 10 * httpguard.Dollar}

// billedFor is what huntLiteLLM billed for the models it ran, at prices.
func billedFor(prices httpguard.PriceTable, ran []string) httpguard.Money {
	var billed httpguard.Money
	for _, m := range ran {
		p, ok := prices[m]
		if !ok {
			p = prices[httpguard.FallbackModel]
		}
		billed += p.Cost(httpguard.Usage{InputTokens: 10, OutputTokens: 1000})
	}
	return billed
}

// A tenant sends POST /v1/chat/completions?model=gpt-4o with a body naming
// deepseek-v3.2, and LiteLLM runs the query's model. Checked and priced by
// the body's model alone, a tenant allowed only deepseek-v3.2 ran gpt-4o,
// and a $0.05 Limit let 20 runs of it through ($0.2005 billed). The query's
// model is checked against the tenant's models, and priced.
func TestProxyChecksAndPricesTheModelTheQueryStringNames(t *testing.T) {
	prices := httpguard.PriceTable{"deepseek-v3.2": testPrices["deepseek-v3.2"], "gpt-4o": huntGPT4o}
	const cheap = `{"model":"deepseek-v3.2","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`

	t.Run("models", func(t *testing.T) {
		up, ran := huntLiteLLM(t)
		r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
			Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
		resp, body := r.post(t, "/v1/chat/completions?model=gpt-4o", cheap, "Authorization", "Bearer vk-chat")
		t.Logf("status %d, ran %v: %s", resp.StatusCode, ran(), body)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.NotContains(t, ran(), "gpt-4o", "a tenant allowed only deepseek-v3.2 ran gpt-4o")
	})
	t.Run("budget", func(t *testing.T) {
		up, ran := huntLiteLLM(t)
		limit := 5 * httpguard.Cent // four answers of gpt-4o's ($0.010025 each)
		r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
			Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
		for range 20 {
			r.post(t, "/v1/chat/completions?model=gpt-4o", cheap, "Authorization", "Bearer vk-chat")
		}
		billed := billedFor(prices, ran())
		charged := r.tenants[0].budget.Spent()
		t.Logf("limit %v, charged %v, billed %v for %d runs", limit, charged, billed, len(ran()))
		assert.LessOrEqual(t, billed, limit, "billed for %d runs of %v, charged %v", len(ran()), ran(), charged)
		assert.Contains(t, ran(), "gpt-4o", "the query's model runs until the Limit is reached")
	})
}

// A tenant with a budget names "gpt-4o,gpt-4o,gpt-4o,gpt-4o" as its model,
// which LiteLLM runs once per name. Priced by the prices' "*" entry (here
// gpt-4o's own price, the dearest there is) as one run, four runs were
// billed on one reservation ($0.1604 billed under a $0.05 Limit). A list
// that only "*" prices is refused, unsent.
func TestProxyRefusesAModelListOnlyTheFallbackPrices(t *testing.T) {
	prices := httpguard.PriceTable{"deepseek-v3.2": testPrices["deepseek-v3.2"], "gpt-4o": huntGPT4o,
		httpguard.FallbackModel: huntGPT4o} // every unlisted model at the dearest price
	for _, extra := range []string{"", `"fastest_response":true,`} {
		name := "batch"
		if extra != "" {
			name = "fastest_response"
		}
		t.Run(name, func(t *testing.T) {
			up, ran := huntLiteLLM(t)
			limit := 5 * httpguard.Cent // four runs of gpt-4o's ($0.010025 each)
			r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
				Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
			body := `{"model":"gpt-4o,gpt-4o,gpt-4o,gpt-4o",` + extra + `"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
			for range 10 {
				resp, got := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
				require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", got)
				assert.Contains(t, string(got), "several models")
			}
			assert.Empty(t, ran(), "nothing reached the relay")
			assert.LessOrEqual(t, billedFor(prices, ran()), limit)
		})
	}
}
