package httpguard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// litellmAPI is a loopback LiteLLM proxy that runs, and bills, the model
// LiteLLM would run: the engine a path names (/engines/{model}/..., a
// name that may span segments), extra_body's model merged over the body's,
// or the first context_window_fallbacks (content_policy_fallbacks) model
// when the body says its prompt is too long for its own (against its
// policy). It answers naming a version of the
// model it ran, which no price table lists, as LiteLLM passes the
// provider's name on: the answer does not tell the Budget what ran.
func litellmAPI(t *testing.T, prices PriceTable, billed *atomic.Int64) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req struct {
			Model                  string                     `json:"model"`
			MaxTokens              int64                      `json:"max_tokens"`
			ExtraBody              map[string]any             `json:"extra_body"`
			ContextWindowFallbacks []string                   `json:"context_window_fallbacks"`
			ContentPolicyFallbacks []struct{ Model string }   `json:"content_policy_fallbacks"`
			Messages               []struct{ Content string } `json:"messages"`
		}
		require.NoError(t, json.Unmarshal(body, &req))
		model := req.Model
		if m, ok := req.ExtraBody["model"].(string); ok {
			model = m
		}
		if name, ok := strings.CutPrefix(r.URL.Path, "/engines/"); ok {
			model = strings.TrimSuffix(name, "/chat/completions")
		}
		if len(req.ContextWindowFallbacks) > 0 && strings.Contains(req.Messages[0].Content, "long") {
			model = req.ContextWindowFallbacks[0]
		}
		if len(req.ContentPolicyFallbacks) > 0 && strings.Contains(req.Messages[0].Content, "policy") {
			model = req.ContentPolicyFallbacks[0].Model
		}
		billed.Add(int64(prices[model].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: req.MaxTokens})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":"%s-2025-01-01","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
			model, len(body), req.MaxTokens)
	})
}

// Behind LiteLLM, a request names the model that runs it in more places
// than its body's "model": the engine its path names, the models it falls
// back to when the prompt is too long or refused (context_window_fallbacks,
// content_policy_fallbacks), and extra_body, which LiteLLM merges over the
// body. Priced at the body's model, each ran a dearer one: the provider
// billed up to $0.45 against a Limit of $0.05.
func TestBudgetLimitHoldsBehindLiteLLM(t *testing.T) {
	prices := PriceTable{"deepseek-v3.2": {Input: 28 * Cent, Output: 42 * Cent}, "gpt-4.1": {Input: 2 * Dollar, Output: 8 * Dollar},
		"openai/gpt-4.1": {Input: 2 * Dollar, Output: 8 * Dollar}, FallbackModel: {Input: 28 * Cent, Output: 42 * Cent}}
	for _, c := range []struct {
		name, path, body string
		refused          string // what a refusal says; "" when priced
	}{
		{"engine", "/engines/gpt-4.1/chat/completions", chatBody("deepseek-v3.2", 1000), ""},
		{"engine, no model in the body", "/engines/gpt-4.1/chat/completions", `{"max_tokens":1000,"messages":[{"role":"user","content":"hello"}]}`, ""},
		{"engine spanning segments", "/engines/openai/gpt-4.1/chat/completions", chatBody("deepseek-v3.2", 1000), `as "openai", which LiteLLM, or a server that routes the path leniently, reads as "openai/gpt-4.1"`},
		{"deployment spanning segments", "/openai/deployments/openai/gpt-4.1/chat/completions", chatBody("deepseek-v3.2", 1000), "name the model in one segment"},
		{"context window fallback", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":1000,"context_window_fallbacks":["gpt-4.1"],"messages":[{"role":"user","content":"a long one"}]}`, ""},
		{"content policy fallback", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":1000,"content_policy_fallbacks":[{"model":"gpt-4.1"}],"messages":[{"role":"user","content":"against policy"}]}`, ""},
		{"fallbacks by model group", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":1000,"context_window_fallbacks":[{"deepseek-v3.2":["gpt-4.1"]}],"messages":[{"role":"user","content":"a long one"}]}`, "context_window_fallbacks"},
		{"extra_body's model", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":1000,"extra_body":{"model":"gpt-4.1"},"messages":[{"role":"user","content":"hello"}]}`, `"extra_body" sets "model"`},
		{"extra_body's max_tokens, in another case", "/v1/chat/completions",
			`{"model":"deepseek-v3.2","max_tokens":1,"extra_body":{"Max_Tokens":1000},"messages":[{"role":"user","content":"hello"}]}`, `"extra_body" sets "max_tokens"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := litellmAPI(t, prices, &billed)
			b := newTestBudget(t, BudgetConfig{Limit: 5 * Cent, Prices: prices})
			want, says := ErrBudgetExceeded, ""
			if c.refused != "" {
				want, says = ErrUnknownModel, c.refused
			}
			postOrRefused(t, api.client(t, b), api.srv.URL+c.path, c.body, 20, want, says)
			assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
			if c.refused != "" {
				assert.Zero(t, api.hits.Load(), "refused before sending")
			}
		})
	}

	var billed atomic.Int64
	api := litellmAPI(t, prices, &billed)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"deepseek-v3.2","max_tokens":10,"extra_body":{"guided_json":{}},"messages":[{"role":"user","content":"hello"}]}`)
	assert.Equal(t, Money(billed.Load()), b.Spent(), "extra_body without a field the Budget reads passes")
}
