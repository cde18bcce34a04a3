package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
)

// "num_retries" from the request body, as litellm.completion's keyword
// arguments, which its proxy passes the body's fields as, or from its
// documented request headers x-litellm-timeout and x-litellm-num-retries
// (which win): each try is sent to the provider, which runs (and bills) it
// whether or not the relay waits for its answer; a try the relay stops
// waiting for after timeout is retried, and once none is left it answers
// 408 (litellm.Timeout). Cloudflare's AI Gateway does the same from its
// per-request headers cf-aig-request-timeout and cf-aig-max-attempts. The
// provider takes 20ms an answer and bills 10 input and 1000 output tokens
// a try, at deepseek-v3.2's price.
func timeoutRelay(t *testing.T) (*httptest.Server, func() (tries int, billed httpguard.Money)) {
	var mu sync.Mutex
	var tries int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Timeout    float64
			NumRetries int `json:"num_retries"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		// LiteLLM's request headers take precedence over the body's fields.
		if v := r.Header.Get("X-Litellm-Timeout"); v != "" {
			json.Unmarshal([]byte(v), &body.Timeout)
		}
		if v := r.Header.Get("X-Litellm-Num-Retries"); v != "" {
			json.Unmarshal([]byte(v), &body.NumRetries)
		}
		// Cloudflare AI Gateway's per-request headers: a timeout in
		// milliseconds to the first byte of the answer, and attempts.
		if v := r.Header.Get("Cf-Aig-Request-Timeout"); v != "" {
			var ms float64
			json.Unmarshal([]byte(v), &ms)
			body.Timeout = ms / 1000
		}
		if v := r.Header.Get("Cf-Aig-Max-Attempts"); v != "" {
			var attempts int
			json.Unmarshal([]byte(v), &attempts)
			body.NumRetries = attempts - 1
		}
		const providerLatency = 0.020
		for range body.NumRetries + 1 {
			mu.Lock()
			tries++ // sent to the provider: it runs and bills the try
			mu.Unlock()
			if body.Timeout == 0 || body.Timeout >= providerLatency {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"object":"chat.completion","model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
					`"usage":{"prompt_tokens":10,"completion_tokens":1000,"total_tokens":1010}}`)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestTimeout)
		io.WriteString(w, `{"error":{"message":"litellm.Timeout: APITimeoutError - Request timed out.","type":"timeout","param":null,"code":"408"}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() (int, httpguard.Money) {
		mu.Lock()
		defer mu.Unlock()
		return tries, httpguard.Money(tries) * testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 10, OutputTokens: 1000})
	}
}

// A tenant with a budget sends a body with "timeout": 0.001 and
// "num_retries": 9, fields LiteLLM takes from the body (or the same in its
// headers x-litellm-timeout and x-litellm-num-retries, or Cloudflare AI
// Gateway's cf-aig-request-timeout and cf-aig-max-attempts): LiteLLM sends
// the request to the provider ten times, gives up on each before its
// answer, and answers 408, which a budget releases (an error status is
// "not billed") and the proxy's Retrier retries. Sent on, the provider
// billed $0.093 under a $0.01 Limit and the budget charged nothing. The
// body's fields are refused, the headers dropped (the proxy's config
// decides a gateway's retries): the relay sends each request once.
func TestProxyKeepsARelaysOwnRetriesAndTimeoutsFromTenants(t *testing.T) {
	const plain = `{"model":"deepseek-v3.2","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	for _, c := range []struct {
		name, body string
		header     []string
	}{
		{"body", `{"model":"deepseek-v3.2","max_tokens":1000,"timeout":0.001,"num_retries":9,"messages":[{"role":"user","content":"hi"}]}`, nil},
		{"headers", plain, []string{"X-Litellm-Timeout", "0.001", "X-Litellm-Num-Retries", "9"}},
		{"cloudflare", plain, []string{"Cf-Aig-Request-Timeout", "1", "Cf-Aig-Max-Attempts", "5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up, tries := timeoutRelay(t)
			limit := httpguard.Cent // about 24 tries' worth
			r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
				Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
			for range 10 {
				resp, got := r.post(t, "/v1/chat/completions", c.body, append([]string{"Authorization", "Bearer vk-chat"}, c.header...)...)
				if c.name == "body" {
					assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
					assert.Contains(t, string(got), "relay_retries_not_checked")
				} else {
					assert.Equal(t, http.StatusOK, resp.StatusCode, "the relay tried once, as it was configured, and was answered")
				}
			}
			n, billed := tries()
			charged := r.tenants[0].budget.Spent()
			t.Logf("limit %v, charged %v, billed %v for %d tries", limit, charged, billed, n)
			assert.LessOrEqual(t, billed, limit, "billed for %d tries, charged %v", n, charged)
			assert.Equal(t, charged, billed, "every try the provider ran is charged")
		})
	}
}

// Without tenants, a proxy-wide budget drops the relay's retry and
// timeout headers too (no key is dropped then: clients send their own).
func TestProxyWideBudgetKeepsARelaysOwnRetriesFromClients(t *testing.T) {
	const plain = `{"model":"deepseek-v3.2","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	for name, header := range map[string][]string{
		"litellm":    {"X-Litellm-Timeout", "0.001", "X-Litellm-Num-Retries", "9"},
		"cloudflare": {"Cf-Aig-Request-Timeout", "1", "Cf-Aig-Max-Attempts", "5"},
	} {
		t.Run(name, func(t *testing.T) {
			up, tries := timeoutRelay(t)
			limit := httpguard.Cent
			r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
				Budget: &BudgetSpec{Limit: limit}})
			for range 10 {
				resp, _ := r.post(t, "/v1/chat/completions", plain, header...)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			}
			n, billed := tries()
			t.Logf("limit %v, billed %v for %d tries", limit, billed, n)
			assert.Equal(t, 10, n, "the relay tried each request once")
			assert.LessOrEqual(t, billed, limit)
		})
	}
}
