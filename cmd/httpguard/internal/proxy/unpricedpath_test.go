package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
)

// pathModelRig is a proxy with a budgeted tenant ("vk-chat") at prices,
// in front of an upstream served under /v1 and /openai (Azure's
// deployments path) that counts the requests reaching it.
func pathModelRig(t *testing.T, prices httpguard.PriceTable) (*running, *atomic.Int32) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hits.Add(1)
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"},
		{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: prices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	return r, &hits
}

// Was a bug: a model without a price that runs the request whatever its
// body names (?model= in the query string, a deployment in the path) was
// refused as request_not_priced, telling the client that "its body must
// be a JSON object naming a priced model", when the body named a priced
// one; the same model in a request whose body named none was
// model_not_priced, as the README's table says of a model without a
// price.
func TestAnUnpricedModelInThePathOrQueryIsModelNotPriced(t *testing.T) {
	r, hits := pathModelRig(t, testPrices)
	for _, path := range []string{"/v1/chat/completions?model=gpt-unpriced", "/openai/deployments/gpt-unpriced/chat/completions"} {
		resp, body := r.post(t, path, chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
		_, code, msg := errorOf(t, body)
		assert.Equal(t, "model_not_priced", code, path)
		assert.Contains(t, msg, `"gpt-unpriced"`, path)
	}
	assert.Zero(t, hits.Load())
}

// Was a bug, as the one above: fast mode for a model in the path or query
// string without a "model@fast" price was request_not_priced, where the
// README's table says speed_not_metered.
func TestFastModeForAModelInThePathOrQueryIsSpeedNotMetered(t *testing.T) {
	prices := httpguard.PriceTable{"deepseek-v3.2@fast": testPrices["deepseek-v3.2"]}
	for k, v := range testPrices {
		prices[k] = v
	}
	r, hits := pathModelRig(t, prices)
	fast := `{"model":"deepseek-v3.2","speed":"fast","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	for _, path := range []string{"/v1/chat/completions?model=claude-sonnet-4-5", "/openai/deployments/claude-sonnet-4-5/chat/completions"} {
		resp, body := r.post(t, path, fast, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
		_, code, msg := errorOf(t, body)
		assert.Equal(t, "speed_not_metered", code, path)
		assert.Contains(t, msg, `"claude-sonnet-4-5@fast"`, path)
	}
	assert.Zero(t, hits.Load())
}
