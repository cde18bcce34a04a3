package proxy

// Found by a review of the day's own fixes; each test failed before its fix.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

// OpenAI's Responses API counts a request's input tokens at POST
// /v1/responses/input_tokens (openai-go: client.Responses.InputTokens.Count),
// free, as Anthropic's /v1/messages/count_tokens is. The refusal of
// endpoints a budget cannot meter took it for a billed endpoint: a tenant
// with a budget got 400 endpoint_not_metered for counting its tokens,
// which it was served before.
func TestResponsesInputTokensIsServedWhereABudgetApplies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"response.input_tokens","input_tokens":11}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	resp, out := r.post(t, "/v1/responses/input_tokens", `{"model":"deepseek-v3.2","input":"how many tokens is this?"}`, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Zero(t, r.tenants[0].budget.Spent(), "counting tokens is free")
}
