package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's "What clients see" rows whose answers no other test spells
// out: each is a 400 with the code (and, where the README says so, the
// param naming the field) it gives, for a tenant whose model list or budget
// applies, and nothing reaches the upstream.
func TestTheREADMEsRefusalsOfFieldsARelayReadsAreTheirRows(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Prices: testPrices, Getenv: realKeys,
		Tenants: []Tenant{
			{Name: "listed", KeySHA256: keyHash("vk-listed"), Models: []string{"deepseek-v3.2"}},
			{Name: "budgeted", KeySHA256: keyHash("vk-budgeted"), Budget: &BudgetSpec{Limit: httpguard.Dollar, Period: httpguard.Daily}},
		}})
	const messages = `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name, keys, path, body, code, param string
	}{
		{"LiteLLM's fallbacks by model group", "vk-listed vk-budgeted", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":8,"fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}],` + messages + `}`, "fallbacks_not_checked", "fallbacks"},
		{"context_window_fallbacks", "vk-listed vk-budgeted", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":8,"context_window_fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}],` + messages + `}`, "fallbacks_not_checked", "context_window_fallbacks"},
		{"content_policy_fallbacks", "vk-listed vk-budgeted", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":8,"content_policy_fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}],` + messages + `}`, "fallbacks_not_checked", "content_policy_fallbacks"},
		{"extra_body", "vk-listed vk-budgeted", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":8,"extra_body":{"model":"gpt-4.1"},` + messages + `}`, "extra_body_not_checked", ""},
		{"a deployment LiteLLM reads across segments", "vk-listed vk-budgeted", "/v1/openai/deployments/openai/deepseek-v3.2/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":8,` + messages + `}`, "path_model_not_checked", ""},
		{"a background response", "vk-budgeted", "/v1/responses",
			`{"model":"deepseek-v3.2","max_output_tokens":8,"background":true,"input":"hi"}`, "background_not_metered", "background"},
	} {
		for _, key := range strings.Fields(tc.keys) {
			resp, body := r.post(t, tc.path, tc.body, "Authorization", "Bearer "+key)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s, %s: %s", tc.name, key, body)
			_, code, _ := errorOf(t, body)
			assert.Equal(t, tc.code, code, "%s, %s", tc.name, key)
			if tc.param != "" {
				var e struct{ Error struct{ Param *string } }
				require.NoError(t, json.Unmarshal(body, &e))
				if assert.NotNil(t, e.Error.Param, "%s, %s: %s", tc.name, key, body) {
					assert.Equal(t, tc.param, *e.Error.Param, "%s, %s", tc.name, key)
				}
			}
		}
	}
	assert.Zero(t, hits.Load(), "nothing is sent")

	// Without a budget a background response passes, as the README's row says.
	resp, body := r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","max_output_tokens":8,"background":true,"input":"hi"}`, "Authorization", "Bearer vk-listed")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.EqualValues(t, 1, hits.Load())
}

// The README's "Routes with the same settings share one Breaker, so a
// provider's circuit is learned once for every tenant and every route that
// sends to it": the circuit one tenant's request opened on one prefix
// refuses another tenant's request on another prefix to the same host and
// model, unsent.
func TestRoutesWithTheSameBreakerSettingsShareTheProvidersCircuit(t *testing.T) {
	down := faultServer(t, httpguardtest.Config{})
	require.NoError(t, down.StartOutage(httpguardtest.ServiceUnavailable()))
	spec := func() *BreakerSpec { return &BreakerSpec{ConsecutiveFailures: 1, CoolDown: time.Minute} }
	r := start(t, Config{
		Upstreams: []Upstream{
			{Prefix: "/v1", URL: mustURL(t, down.BaseURL()), KeyEnv: "OPENAI_KEY", Breaker: spec()},
			{Prefix: "/v2", URL: mustURL(t, down.BaseURL()), KeyEnv: "OPENAI_KEY", Breaker: spec()},
		},
		Getenv: realKeys,
		Tenants: []Tenant{
			{Name: "a", KeySHA256: keyHash("vk-a")},
			{Name: "b", KeySHA256: keyHash("vk-b")},
		},
	})
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-a")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", body)
	require.EqualValues(t, 1, down.Stats().Requests, "its failure opened the circuit: no retry went")

	resp, body = r.post(t, "/v2/chat/completions", chatBody, "Authorization", "Bearer vk-b")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", body)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "circuit_open", code)
	assert.EqualValues(t, 1, down.Stats().Requests, "another tenant, another route: the same circuit, nothing sent")
}
