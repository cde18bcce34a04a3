package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// geminiServer is a loopback relay serving Gemini's API beside OpenAI's,
// as relays do: a path .../models/{model}:{method} (Gemini's, or Vertex
// AI's .../publishers/google/models/{model}:{method}) runs the model it
// names, whatever the body names.
func geminiServer(t *testing.T) (url string, ran func() []string) {
	up, ran := pathModelServer(t, `{"prompt_tokens":5,"completion_tokens":1}`, func(path string, body relayRequest) (string, bool) {
		_, rest, ok := strings.Cut(path, "/models/")
		if !ok {
			return body.Model, strings.HasSuffix(path, "/chat/completions")
		}
		model, _, ok := strings.Cut(rest, ":")
		return model, ok
	})
	return up.URL, ran
}

// Was a bug: a tenant limited to some models ran any model through a
// relay serving Gemini's API (/v1/models/gemini-2.5-pro:generateContent,
// Vertex AI's …/publishers/google/models/{model}:generateContent), which
// runs the model its path names, by naming an allowed model in the body:
// the model check read the body, and the path only for Azure deployments
// and engines.
func TestATenantsModelsHoldForTheGeminiModelItsPathNames(t *testing.T) {
	up, ran := geminiServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	const allowedInBody = `{"model":"deepseek-v3.2","contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	for _, path := range []string{
		"/v1/models/gemini-2.5-pro:generateContent",
		"/v1/models/gemini-2.5-pro:streamGenerateContent",
		"/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent",
		"/v1/Models/gemini-2.5-pro:generateContent",
	} {
		resp, body := r.post(t, path, allowedInBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s: %s", path, body)
	}
	resp, body := r.post(t, "/v1/models/deepseek-v3.2:generateContent", `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the path names the model a body without one runs: %s", body)
	resp, body = r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, []string{"deepseek-v3.2", "deepseek-v3.2"}, ran(), "the models the tenant ran")
	assert.Equal(t, http.StatusOK, r.get(t, "/v1/models/gemini-2.5-pro:generateContent", "Authorization", "Bearer vk-chat").StatusCode,
		"a read runs no model: it is not checked as one")
}

// Where a budget applies, which prices the body's model, a Gemini model
// the path names must be the body's.
func TestABudgetPricesNoGeminiModelThePathNamesOtherThanTheBodys(t *testing.T) {
	up, ran := geminiServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp, body := r.post(t, "/v1/models/claude-sonnet-4-5:generateContent/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "path_model_not_checked", code)
	assert.Empty(t, ran(), "nothing was sent")
}

// A path naming a model with escapes is refused only where the model it
// names is checked or priced and runs: not in a read (openai-node escapes
// a fine-tuned model's colons, GET /v1/models/ft%3Agpt-4o-mini%3Aorg%3A%3Aid),
// nor for a tenant without models or a budget. A fine-tuned model's colons
// name no Gemini method.
func TestAnEscapedModelInAPathIsRefusedOnlyWhereItIsChecked(t *testing.T) {
	up, _ := geminiServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "listed", KeySHA256: keyHash("vk-listed"), Models: []string{"deepseek-v3.2"}},
			{Name: "free", KeySHA256: keyHash("vk-free")}}})
	const ft = "/v1/models/ft%3Agpt-4o-mini%3Aorg%3A%3Aabc"
	for _, key := range []string{"vk-listed", "vk-free"} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			req, err := http.NewRequest(method, r.URL+ft, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := r.client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.NotEqual(t, http.StatusBadRequest, resp.StatusCode, "%s %s with %s", method, ft, key)
		}
	}
	resp, body := r.post(t, "/v1/fine_tuning/models/ft:open-mistral-7b:587a6b29:20240514:7e773925/archive", "", "Authorization", "Bearer vk-listed")
	assert.NotEqual(t, http.StatusForbidden, resp.StatusCode, "a fine-tuned model's colons are no Gemini method's: %s", body)
	resp, body = r.post(t, "/v1/models/gemini%2D2.5-pro:generateContent", `{"contents":[]}`, "Authorization", "Bearer vk-free")
	assert.NotEqual(t, http.StatusBadRequest, resp.StatusCode, "a tenant without models or a budget: %s", body)
	resp, body = r.post(t, "/v1/models/deepseek%2Dv3.2:generateContent", `{"contents":[]}`, "Authorization", "Bearer vk-listed")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a tenant whose models are checked: %s", body)
}
