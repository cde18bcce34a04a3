package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startTenantQueries starts a proxy with one tenant (virtual key
// vk-chat) in front of an upstream answering chats, and returns it with
// the query strings the upstream received so far.
func startTenantQueries(t *testing.T) (*running, func() []string) {
	var mu sync.Mutex
	var queries []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	return r, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(queries)
	}
}

// Was a bug: with tenants, the proxy swapped the keys a client sends in
// headers for the real key, but passed the query string as it came: a
// key sent Gemini style (?key=, or Azure's ?api-key=) reached the upstream
// beside the real key, a virtual key there landing in the provider's or a
// relay's logs, another key billed or refused by an upstream that reads it
// first. A key in the query string is now refused with tenants, before the
// tenant is looked up, and never echoed.
func TestWithTenantsAKeyInTheQueryStringIsRefusedAndNeverSent(t *testing.T) {
	r, queries := startTenantQueries(t)

	for _, query := range []string{"key=vk-chat", "key=AIzaSyOtherKey0123456789", "alt=sse&key=vk-chat", "api-key=vk-chat", "api_key=vk-chat",
		"%6Bey=vk-chat", "KEY=vk-chat", "alt=sse;key=vk-chat", "x-goog-api-key=vk-chat", "access_token=vk-chat"} {
		for _, header := range [][]string{{"Authorization", "Bearer vk-chat"}, nil} {
			resp, out := r.post(t, "/v1/chat/completions?"+query, chatBody, header...)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s %v: %s", query, header, out)
			_, code, msg := errorOf(t, out)
			assert.Equal(t, "key_in_query", code, query)
			assert.NotContains(t, msg, "vk-chat", "the key is not echoed")
			assert.NotContains(t, msg, "AIza")
		}
	}
	assert.Empty(t, queries(), "no request carrying a key in its query reached the upstream")
	assert.NotContains(t, r.logs.String(), "vk-chat")
	assert.NotContains(t, r.logs.String(), "AIza")
	rec := r.lastLog(t, 1)
	assert.Equal(t, "key_in_query", rec["refusal"])

	// Parameters that hold no key pass as they came.
	resp, out := r.post(t, "/v1/chat/completions?alt=sse&keys=2&monkey=1&api-version=2024-10-21&page_token=abc", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, []string{"alt=sse&keys=2&monkey=1&api-version=2024-10-21&page_token=abc"}, queries())
}

// Was a bug: Google's APIs take a key as the system parameters $key
// (%24key on the wire, the "$" keeping it apart from an API's own
// parameters) and, for an OAuth token, oauth_token besides access_token
// (cloud.google.com/apis/docs/system-parameters); the proxy refused key=
// but sent ?$key=vk-chat on to the upstream, the virtual key landing in
// its logs, or another key of the tenant's choosing read there.
func TestWithTenantsAGoogleSystemParameterKeyIsRefused(t *testing.T) {
	r, queries := startTenantQueries(t)
	for _, query := range []string{"$key=vk-chat", "%24key=vk-chat", "alt=sse&$KEY=vk-chat", "oauth_token=vk-chat"} {
		resp, out := r.post(t, "/v1/chat/completions?"+query, chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", query, out)
		_, code, _ := errorOf(t, out)
		assert.Equal(t, "key_in_query", code, query)
	}
	assert.Empty(t, queries(), "no request carrying a key in its query reached the upstream")
}

// Without tenants the client's own key passes through, in its headers or
// its query string alike: the proxy holds no key to swap it for.
func TestWithoutTenantsAKeyInTheQueryStringPassesThrough(t *testing.T) {
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	resp, out := r.post(t, "/v1/chat/completions?key=AIzaSyOwnKey", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "key=AIzaSyOwnKey", <-got)
}
