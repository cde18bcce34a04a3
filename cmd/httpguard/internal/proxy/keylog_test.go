package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the access log keeps an upstream's 401, 403 or 429 message
// cut to 500 bytes, and the cut came before the real keys were masked: a
// message that echoed the key across the 500th byte left the key's first
// characters in the log, which the mask, looking for the whole key, no
// longer found.
func TestAnUpstreamMessageCutInTheLogKeepsNoPartOfTheKey(t *testing.T) {
	const key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		msg := strings.Repeat("x", 480) + " key " + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + " is not valid"
		io.WriteString(w, `{"error":{"message":"`+msg+`","type":"invalid_request_error","code":"invalid_api_key"}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Getenv:  func(string) string { return key },
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.NotContains(t, string(body), key[:12])
	rec := r.lastLog(t, 1)
	require.Contains(t, rec["error"], "xxxx", "the log keeps the provider's message")
	assert.NotContains(t, r.logs.String(), key[:12], "no part of the key is logged")
}
