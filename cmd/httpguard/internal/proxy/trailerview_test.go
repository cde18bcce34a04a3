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

// Was a bug: the headers of the real key's account (x-ratelimit-*,
// anthropic-ratelimit-*, its organization) are dropped from every answer
// a tenant reads, but an upstream that sent them as trailers, announced
// or not, had them passed on to the tenant after the body.
func TestTenantsDoNotSeeTheAccountInTrailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Ratelimit-Remaining-Tokens, X-Trace")
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: [DONE]\n\n")
		w.Header().Set("X-Ratelimit-Remaining-Tokens", "29957")
		w.Header().Set("X-Trace", "t-1")
		w.Header().Set(http.TrailerPrefix+"Anthropic-Ratelimit-Tokens-Remaining", "1200") // not announced
		w.Header().Set(http.TrailerPrefix+"Openai-Organization", "org-real")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", strings.NewReader(streamBody))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer vk-chat")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "t-1", resp.Trailer.Get("X-Trace"), "other trailers pass")
	for _, name := range []string{"X-Ratelimit-Remaining-Tokens", "Anthropic-Ratelimit-Tokens-Remaining", "Openai-Organization"} {
		assert.Empty(t, resp.Trailer.Get(name), name)
	}
}
