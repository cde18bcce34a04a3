package proxy

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: every Azure deployment of a resource shared one circuit (the
// host and a body that names no model), so one failing deployment cut off
// the others, and the refusal's Retry-After said a second, not when the
// circuit lets a probe through.
func TestOneAzureDeploymentsCircuitOpensAlone(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/deployments/sick/") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`))
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/openai", URL: mustURL(t, up.URL+"/openai"), KeyEnv: "OPENAI_KEY",
		Breaker: &BreakerSpec{ConsecutiveFailures: 1, CoolDown: time.Minute}}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	post := func(deployment string) (*http.Response, []byte) {
		return r.post(t, "/openai/deployments/"+deployment+"/chat/completions?api-version=2024-10-21", `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`, "Api-Key", "vk-chat")
	}
	resp, _ := post("sick")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the deployment's own 503: its circuit opened on it")
	resp, body := post("sick")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "circuit_open", code)
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 60, secs, 1, "until the deployment's circuit lets a probe through")

	resp, body = post("well")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "another deployment's circuit is its own: %s", body)
}
