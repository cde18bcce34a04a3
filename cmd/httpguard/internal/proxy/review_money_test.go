package proxy

import (
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
)

// A price left empty in YAML (output: with nothing after it, or "") is
// missing, as in LoadPrices's JSON, not 0: a forgotten value must not
// make output free.
func TestParseFileRefusesAnEmptyPrice(t *testing.T) {
	for _, yaml := range []string{
		"prices:\n  m: {input: 1, output: }\n",
		"prices:\n  m:\n    input: 1\n    output:\n",
		"prices:\n  m: {input: 1, output: \"\"}\n",
		"prices:\n  m: {input: 1, output: 15, long_context: {above: 10, input: 2, output: }}\n",
	} {
		f, err := ParseFile(strings.NewReader(yaml), "p.yaml")
		assert.ErrorContains(t, err, `p.yaml:2: model "m"`, "%s read as %+v", yaml, f.Prices)
		assert.ErrorContains(t, err, "output", yaml)
	}
}

// A tenant limited to some models may not name others as fallbacks
// (OpenRouter's "models", or "fallbacks" on its Anthropic-format
// endpoint): OpenRouter serves the request with them when the model
// cannot (a prompt too long for its context is enough), at their prices.
func TestATenantMayNotNameAModelItIsNotAllowedAsAFallback(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Prices = maps.Clone(testPrices)
	c.Prices["gpt-4.1"] = httpguard.ExamplePrices()["gpt-4.1"] // priced, but not the tenant's
	r := start(t, c)
	for _, fallbacks := range []string{`"models":["gpt-4.1"],`, `"fallbacks":[{"model":"gpt-4.1"}],`} {
		body := strings.Replace(chatBody, `"max_tokens"`, fallbacks+`"max_tokens"`, 1)
		resp, answer := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s: %s", fallbacks, answer)
	}
	assert.Zero(t, srv.Stats().Requests)
	body := strings.Replace(chatBody, `"max_tokens"`, `"models":["claude-sonnet-4-5"],"max_tokens"`, 1)
	resp, answer := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a fallback the tenant may use: %s", answer)
}
