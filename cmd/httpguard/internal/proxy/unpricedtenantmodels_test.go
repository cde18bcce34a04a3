package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
)

// Was a gap: a tenant with a budget whose models list a model the prices
// do not cover (and no "*" entry) was refused every request for it, at
// run time (400 model_not_priced), with nothing said at start. The proxy
// now warns at start, by tenant and model, never a key; not of a model
// served free (OpenAI's moderation models), which its budget passes
// unpriced.
func TestATenantsModelNoPriceCoversIsWarnedOfAtStart(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	tenants := []Tenant{
		{Name: "team-a", KeySHA256: keyHash("vk-a-SECRET"), Budget: &BudgetSpec{Limit: httpguard.Dollar},
			Models: []string{"deepseek-v3.2", "gpt-9", "omni-moderation-latest", "mistral-moderation-latest"}},
		{Name: "team-b", KeySHA256: keyHash("vk-b-SECRET"), Models: []string{"gpt-9"}}, // no budget prices its requests
	}
	r := start(t, Config{Upstreams: upstreams(t, srv), Getenv: realKeys, Prices: testPrices, Tenants: tenants})
	logs := r.logs.String()
	assert.Contains(t, logs, `"msg":"httpguard proxy: a tenant may use models no price covers, and has a budget: every request for them is refused (model_not_priced); price them, or add a \"*\" entry","tenant":"team-a","models":"gpt-9, mistral-moderation-latest"`)
	assert.Equal(t, 1, strings.Count(logs, "no price covers"), "team-b has no budget: %s", logs)
	assert.NotContains(t, logs, "SECRET")

	resp, body := r.post(t, "/v1/chat/completions", strings.Replace(chatBody, "deepseek-v3.2", "gpt-9", 1), "Authorization", "Bearer vk-a-SECRET")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "model_not_priced", code, "what the warning says")
	resp, body = r.post(t, "/v1/moderations", `{"model":"omni-moderation-latest","input":"hi"}`, "Authorization", "Bearer vk-a-SECRET")
	// The fault server serves no moderations: its 404 says it was reached.
	assert.Contains(t, string(body), "unknown path /v1/moderations", "a free moderation passes unpriced: %d %s", resp.StatusCode, body)
	resp, body = r.post(t, "/v1/moderations", `{"model":"mistral-moderation-latest","input":"hi"}`, "Authorization", "Bearer vk-a-SECRET")
	_, code, _ = errorOf(t, body)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "model_not_priced", code, "a billed moderation is priced: %s", body)

	// A budget of the whole proxy prices every tenant's requests; a "*"
	// entry covers every model.
	global := start(t, Config{Upstreams: upstreams(t, srv), Getenv: realKeys, Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar},
		Tenants: tenants[1:]})
	assert.Contains(t, global.logs.String(), `"tenant":"team-b","models":"gpt-9"`)
	wildcard := httpguard.PriceTable{"*": testPrices["claude-sonnet-4-5"]}
	covered := start(t, Config{Upstreams: upstreams(t, srv), Getenv: realKeys, Prices: wildcard, Budget: &BudgetSpec{Limit: httpguard.Dollar},
		Tenants: tenants})
	assert.NotContains(t, covered.logs.String(), "no price covers")
}
