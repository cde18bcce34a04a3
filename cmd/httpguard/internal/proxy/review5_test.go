package proxy

// Found by the fifth adversarial review of the proxy; each test failed
// before its fix.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The free endpoints pass a budget unpriced (httpguard.FreeEndpoint), and
// their models are ones no price table lists: OpenAI's moderation models
// (client.moderations.create(model="omni-moderation-latest", ...)), or a
// Claude model a tenant only counts tokens for. A budgeted tenant was
// refused 400 model_not_priced for calling them, although nothing there
// is billed and the README serves them.
func TestFreeEndpointsNeedNoPriceForTheirModel(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"modr-1","results":[{"flagged":false}]}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	for path, body := range map[string]string{
		"/v1/moderations":            `{"model":"omni-moderation-latest","input":"is this fine?"}`,
		"/v1/messages/count_tokens":  `{"model":"claude-opus-4-1","messages":[{"role":"user","content":"hi"}]}`,
		"/v1/responses/input_tokens": `{"model":"gpt-5","input":"how many tokens is this?"}`,
	} {
		resp, out := r.post(t, path, body, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, out)
	}
	assert.EqualValues(t, 3, hits.Load())
	assert.Zero(t, r.tenants[0].budget.Spent(), "free endpoints are free")
}

// Counting tokens bills nothing and has its own rate limits at the
// providers, apart from the model's ("Token counting and message creation
// have separate and independent rate limits", Anthropic): a service that
// counts a prompt before it sends it, as the SDKs' count_tokens helpers
// invite, spends none of the model's tokens per minute by counting. The
// proxy's Limiter took the counted prompt (and an output estimate) from
// the model's tokens bucket and kept it, as no usage came back, so one
// tenant counting a long prompt used up the minute of the real key that
// every tenant shares, and the next real request was refused 429 by the
// proxy with the provider's limit untouched.
func TestCountingTokensSpendsNoneOfTheModelsTokensPerMinute(t *testing.T) {
	var messages atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/messages/count_tokens" {
			io.WriteString(w, `{"input_tokens":30000}`)
			return
		}
		messages.Add(1)
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"end_turn","usage":{"input_tokens":8,"output_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv:    realKeys,
		Limits:    LimitSpec{TPM: 20000, MaxWait: -1}, // the real key's limit, shared by the tenants
		Tenants: []Tenant{{Name: "counter", KeySHA256: keyHash("vk-counter"), Limits: LimitSpec{RPS: 0.1, Burst: 1, MaxWait: -1}},
			{Name: "chat", KeySHA256: keyHash("vk-chat")}},
	})
	long := `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + strings.Repeat("word ", 30000) + `"}]}`
	resp, out := r.post(t, "/v1/messages/count_tokens", long, "X-Api-Key", "vk-counter", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))

	resp, out = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "counting tokens spent none of the minute's tokens: %s", out)
	assert.EqualValues(t, 1, messages.Load())

	// The tenant's own rate still paces its counting.
	resp, out = r.post(t, "/v1/messages/count_tokens", long, "X-Api-Key", "vk-counter", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
}

// Anthropic's API answers every request with anthropic-organization-id,
// the organization of the key used. The proxy dropped OpenAI's account
// headers from tenants' answers ("tenants see the proxy, not the
// account", README) but let Anthropic's through.
func TestTenantsDoNotSeeTheRealAnthropicOrganization(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Anthropic-Organization-Id", "7f3c9d2e-real-org")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"end_turn","usage":{"input_tokens":8,"output_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv:    realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}},
	})
	resp, out := r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Empty(t, resp.Header.Get("Anthropic-Organization-Id"))
}

// The providers' 429s on counting tokens speak of the counting's own
// limit. The Limiter took one, with its Retry-After, as a pause of the
// model's key, so a tenant counting past the real key's counting limit
// paused every tenant's real requests to the model.
func TestACountingLimitDoesNotPauseTheModel(t *testing.T) {
	var messages atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/messages/count_tokens" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"type":"error","error":{"type":"rate_limit_error","message":"count_tokens rate limit"}}`)
			return
		}
		messages.Add(1)
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"end_turn","usage":{"input_tokens":8,"output_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	c := Config{
		Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv:    realKeys,
		Limits:    LimitSpec{RPS: 100, MaxWait: -1},
		Tenants:   []Tenant{{Name: "counter", KeySHA256: keyHash("vk-counter")}, {Name: "chat", KeySHA256: keyHash("vk-chat")}},
		Retry:     RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}, // no retries
	}
	r := start(t, c)
	resp, out := r.post(t, "/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-counter", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))

	resp, out = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the counting limit is not the model's: %s", out)
	assert.EqualValues(t, 1, messages.Load())
}

// Anthropic's fast mode ("speed": "fast", with the beta header
// fast-mode-2026-02-01) runs Claude Opus at premium prices: 6 times its
// standard rates on Opus 4.6 (12 times past 200K input tokens), twice on
// later models; OpenRouter takes it too. A budget prices the model at its
// table's standard price, so a tenant asking for fast mode had the
// provider bill several times its cap before the budget refused it.
func TestFastModeCannotSpendPastATenantsCap(t *testing.T) {
	opus := httpguard.Price{Input: 5 * httpguard.Dollar, Output: 25 * httpguard.Dollar}
	var bills bill
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		speed := "standard"
		if strings.Contains(string(b), `"speed":"fast"`) {
			speed = "fast"
		}
		u := httpguard.Usage{InputTokens: 1000, OutputTokens: 1000}
		cost := opus.Cost(u)
		if speed == "fast" {
			cost *= 6 // Opus 4.6: $30 / $150 per million
		}
		bills.add(cost)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-6","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"end_turn","usage":{"input_tokens":1000,"output_tokens":1000,"speed":"`+speed+`"}}`)
	}))
	t.Cleanup(up.Close)
	limit := 10 * httpguard.Cent
	r := start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv:    realKeys, Prices: httpguard.PriceTable{"claude-opus-4-6": opus},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}},
	})
	body := `{"model":"claude-opus-4-6","max_tokens":1000,"speed":"fast","messages":[{"role":"user","content":"hi"}]}`
	for range 10 {
		resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01", "Anthropic-Beta", "fast-mode-2026-02-01")
		if resp.StatusCode != http.StatusOK {
			assert.Contains(t, []int{http.StatusBadRequest, http.StatusTooManyRequests}, resp.StatusCode, string(out))
			break
		}
	}
	assert.LessOrEqual(t, bills.get(), limit, "the provider billed %v on a %v cap", bills.get(), limit)

	// With its fast price, fast mode is served within the cap.
	bills, limit = bill{}, httpguard.Dollar
	r = start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv:    realKeys, Prices: httpguard.PriceTable{"claude-opus-4-6": opus, "claude-opus-4-6" + httpguard.FastTier: {Input: 30 * httpguard.Dollar, Output: 150 * httpguard.Dollar}},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}},
	})
	var served int
	for range 10 {
		resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01", "Anthropic-Beta", "fast-mode-2026-02-01")
		if resp.StatusCode != http.StatusOK {
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
			break
		}
		served++
	}
	assert.Positive(t, served)
	assert.LessOrEqual(t, bills.get(), limit, "the provider billed %v on a %v cap", bills.get(), limit)
}

func TestAsksForFastMode(t *testing.T) {
	for body, want := range map[string]bool{
		`{"model":"m","speed":"fast"}`:               true,
		`{"model":"m", "Speed" : "fast" }`:           true,
		`{"model":"m","sp\u0065ed":"fast"}`:          true,
		`{"model":"m","speed":"turbo"}`:              true,
		`{"model":"m","speed":1}`:                    true,
		`{"model":"m","speed":"standard"}`:           false,
		`{"model":"m","speed":null}`:                 false,
		`{"model":"m","metadata":{"speed":"fast"}}`:  false,
		`{"model":"m","input":"\"speed\":\"fast\""}`: false,
		`{"model":"m","service_tier":"fast"}`:        true,
		`{"model":"m","service_tier":"priority"}`:    false,
		`{"model":"m","service_tier":"auto"}`:        false,
	} {
		assert.Equal(t, want, mustReadRequest(t, body).fast, body)
	}
}
