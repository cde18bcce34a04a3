package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// promptServer is a loopback LiteLLM with prompt management: a request
// naming a prompt_id it stores runs on that prompt, whose model and
// max_tokens replace the body's (LiteLLM's prompt managers return the
// model and the parameters to run with) and whose messages come first.
func promptServer(t *testing.T) (*httptest.Server, func() []string) {
	return relayServer(t, func(r *http.Request) string {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		model, _ := body["model"].(string)
		for k, v := range body {
			if id, _ := v.(string); strings.EqualFold(k, "prompt_id") && id == "support-agent" {
				model = "gpt-4.1" // the stored prompt's model
			}
		}
		return model
	})
}

// Was a bug: LiteLLM runs a request naming a prompt_id on the prompt its
// prompt management stores under that id: the prompt's messages are
// added to the request's, billed as input the body does not hold, and the
// model and parameters (max_tokens) the prompt names replace the body's.
// The proxy refuses OpenAI's stored prompts ("prompt") but read
// prompt_id as nothing: a tenant limited to deepseek-v3.2 ran the stored
// prompt's gpt-4.1, and one with a budget spent past its cap.
func TestALiteLLMPromptIDIsRefused(t *testing.T) {
	relayRunsNoOtherModel(t, promptServer, []string{
		`{"model":"deepseek-v3.2","max_tokens":1000,"prompt_id":"support-agent","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"deepseek-v3.2","max_tokens":1000,"Prompt_ID":"support-agent","messages":[{"role":"user","content":"hi"}]}`,
	})
}

func TestAPromptIDIsRefusedByNameAndANullOnePasses(t *testing.T) {
	up, ran := promptServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	resp, body := r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","prompt_id":"support-agent","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, code, msg := errorOf(t, body)
	assert.Equal(t, "prompt_id_not_checked", code)
	assert.Contains(t, msg, `"prompt_id"`)
	assert.Equal(t, "prompt_id", r.lastLog(t, 1)["refusal"])
	assert.Empty(t, ran(), "nothing sent")

	resp, body = r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","prompt_id":null,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, []string{"deepseek-v3.2"}, ran())
}
