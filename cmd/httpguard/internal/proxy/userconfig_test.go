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

// userConfigServer is a loopback LiteLLM that honours a request's
// user_config as LiteLLM's proxy does (where client-side credentials are
// allowed, and in its releases before they were refused): the request
// runs on a router of the client's making, whose model_list entry for the
// model the body names runs the model its litellm_params name, with the
// relay's own credentials when the entry sets none.
func userConfigServer(t *testing.T) (*httptest.Server, func() []string) {
	return relayServer(t, func(r *http.Request) string {
		var body struct {
			Model      string
			UserConfig struct {
				ModelList []struct {
					ModelName     string                 `json:"model_name"`
					LitellmParams struct{ Model string } `json:"litellm_params"`
				} `json:"model_list"`
			} `json:"user_config"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		model := body.Model
		for _, d := range body.UserConfig.ModelList {
			if d.ModelName == body.Model && d.LitellmParams.Model != "" {
				model = d.LitellmParams.Model
			}
		}
		return model
	})
}

// relayServer is a loopback relay that runs each request on the model
// runs reads in it, and answers 80 prompt and 1,000 completion tokens of
// it, naming the version of the model that ran, as providers do. It
// returns the models it ran so far.
func relayServer(t *testing.T, runs func(r *http.Request) string) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		model := runs(r)
		mu.Lock()
		ran = append(ran, model)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"`+model+`-2025-04-14","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":1000}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ran...) }
}

// Was a bug: LiteLLM runs a request whose body holds a user_config on a
// router that config defines, so that {"model": "deepseek-v3.2",
// "user_config": {"model_list": [{"model_name": "deepseek-v3.2",
// "litellm_params": {"model": "gpt-4.1"}}]}} runs gpt-4.1 with the relay's
// credentials (and the config's num_retries and fallbacks, each try
// billed). The proxy checked and priced the body's deepseek-v3.2: a tenant
// limited to it ran any model, and one with a budget spent past its cap
// at the price of a model it never named.
func TestAUserConfigARelayRunsIsRefused(t *testing.T) {
	relayRunsNoOtherModel(t, userConfigServer, []string{
		`{"model":"deepseek-v3.2","max_tokens":1000,"user_config":{"model_list":[{"model_name":"deepseek-v3.2","litellm_params":{"model":"gpt-4.1"}}]},"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"deepseek-v3.2","max_tokens":1000,"User_Config":{"model_list":[{"model_name":"deepseek-v3.2","litellm_params":{"model":"gpt-4.1"}}]},"messages":[{"role":"user","content":"hi"}]}`,
	})
}

func TestAUserConfigIsRefusedByNameAndANullOnePasses(t *testing.T) {
	up, ran := userConfigServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp, body := r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","user_config":{"model_list":[]},"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, code, msg := errorOf(t, body)
	assert.Equal(t, "user_config_not_checked", code)
	assert.Contains(t, msg, `"user_config"`)
	assert.Equal(t, "user_config", r.lastLog(t, 1)["refusal"])
	assert.Empty(t, ran(), "nothing sent")

	resp, body = r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","user_config":null,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, []string{"deepseek-v3.2"}, ran())
}
