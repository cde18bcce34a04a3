package proxy

// Found by the fifth adversarial review of the proxy; each test failed
// before its fix.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
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
