package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a budget frees count_tokens by the path as sent, and
// /v1/chat/completions%3F/count_tokens ends in /count_tokens: it passed a
// budget without room, uncharged. An upstream behind a front that
// forwards the decoded path (nginx's proxy_pass with $uri, a relay that
// builds its URL from the decoded path) reads an escaped ? or # as the
// start of the query or fragment, and runs a chat completion. A path
// holding either, escaped, is refused, as a backslash is.
func TestAnEscapedQueryOrFragmentInThePathIsRefused(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As a front forwarding $uri: the decoded path, parsed again.
		u, _ := url.Parse(r.URL.Path)
		mu.Lock()
		ran = append(ran, u.Path)
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"input_tokens":5}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Prices: testPrices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "search", KeySHA256: keyHash("vk-search"), Budget: &BudgetSpec{Limit: 10 * httpguard.Nanodollar}}}})
	for _, p := range []string{"/v1/chat/completions%3F/count_tokens", "/v1/chat/completions%3f/count_tokens", "/v1/chat/completions%23/count_tokens"} {
		resp, body := r.post(t, p, chatBody, "Authorization", "Bearer vk-search")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", p, body)
	}
	resp, body := r.post(t, "/v1/messages/count_tokens", chatBody, "Authorization", "Bearer vk-search")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the free path itself passes: %s", body)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"/v1/messages/count_tokens"}, ran, "the upstream ran no path but the free one")
	for _, p := range ran {
		assert.False(t, strings.HasSuffix(p, "/completions"), p)
	}
}
