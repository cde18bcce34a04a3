package proxy

// Hostile inputs to `httpguard proxy`, found by a second adversarial review;
// each test failed before its fix. Each comment says what went wrong.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a review):
// a real key read from the environment with a trailing newline (a
// Kubernetes secret made with --from-file, an env file written by echo) is
// accepted at start; then every request fails as "502 upstream_unreachable:
// the upstream could not be reached" although nothing was ever sent, and
// /readyz says ready. The README promises that a bad setting is an error at
// start that names it.
func TestAKeyWithANewlineIsAnErrorAtStartNotA502PerRequest(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Getenv = func(name string) string { return realKeys(name) + "\n" }
	c.Transport = NewTransport()
	p, err := New(c)
	if err == nil {
		t.Cleanup(func() { p.Close() })
		r := start(t, c)
		resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		t.Logf("with the key accepted, a request gets %d %s; requests that reached the upstream: %d",
			resp.StatusCode, body, srv.Stats().Requests)
	}
	require.Error(t, err, "New must refuse a key that cannot be sent in a header")
	assert.Contains(t, err.Error(), "OPENAI_KEY", "the error names the variable")
	assert.NotContains(t, err.Error(), "sk-real-openai", "and never the key")
}

// Was a bug (found by a review):
// a 1xx the upstream sends before its answer (100 Continue, for a
// client sending Expect: 100-continue as curl does for large bodies; 103
// Early Hints) is what the access log records as the request's status:
// ReverseProxy forwards the 1xx through statusWriter.WriteHeader, which
// keeps the first code written.
func TestAnInformationalAnswerIsNotTheLoggedStatus(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv)})
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Expect", "100-continue")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 200, r.lastLog(t, 1)["status"], "Expect: 100-continue")

	hints := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
	}))
	t.Cleanup(hints.Close)
	r2 := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, hints.URL+"/v1")}}})
	resp, _ = r2.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 200, r2.lastLog(t, 1)["status"], "103 Early Hints")
}

// Was a bug (found by a review):
// when Redis holding a tenant's budget does not answer, the budget
// fails closed (as designed) but the client is told "502
// upstream_unreachable: the upstream could not be reached, after 0
// attempt(s)", and the access log says the same: the upstream is blamed
// (an operator chases the provider) for what is the budget store, and
// nothing reached the upstream.
func TestABudgetStoreOutageIsNotBlamedOnTheUpstream(t *testing.T) {
	client, stopRedis := startRedis(t)
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Redis = client
	r := start(t, c)
	stopRedis()
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.NotEqual(t, http.StatusOK, resp.StatusCode, "fails closed")
	assert.Zero(t, srv.Stats().Requests, "nothing was sent")
	_, code, msg := errorOf(t, body)
	assert.NotEqual(t, "upstream_unreachable", code, "%d %s", resp.StatusCode, body)
	assert.NotContains(t, msg, "the upstream could not be reached")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "store_unavailable", code)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
}

// Was a bug (found by a review):
// ParseFile reads the first YAML document and silently ignores the
// rest. A config split by "---" (upstreams, then tenants) starts without
// its tenants: no virtual keys, no tenant budgets, clients' keys passed
// through, and no error. The parser otherwise refuses anything it would
// not use ("a typo must not pass silently").
func TestASecondYAMLDocumentIsNotSilentlyIgnored(t *testing.T) {
	doc := `upstreams:
  - prefix: /v1
    url: https://api.holysheep.ai/v1
    key_env: HOLYSHEEP_API_KEY
---
tenants:
  - name: search
    key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    budget: {limit: 20, period: daily}
`
	f, err := ParseFile(strings.NewReader(doc), "proxy.yaml")
	if err == nil {
		t.Logf("parsed: %d upstream(s), %d tenant(s)", len(f.Upstreams), len(f.Tenants))
	}
	require.Error(t, err, "the tenants of the second document were dropped without a word")
	assert.Contains(t, err.Error(), "proxy.yaml:5")
}

// Was a bug (found by a review):
// a tenant with a budget can mint an ephemeral provider key through
// the proxy. POST /v1/realtime/sessions names a top-level "model", so with
// a "*" price (which the README suggests for fallbacks) it is priced as a
// tiny chat request and forwarded; OpenAI answers with client_secret.value,
// a key for the real account that the tenant then uses against OpenAI's
// Realtime API directly: unmetered and outside every budget. The proxy
// refuses the Realtime WebSocket for exactly that reason ("a tunnel could
// be neither checked nor metered"); minting its key is the same door.
func TestATenantCannotMintAnEphemeralProviderKey(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		reached.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"sess_1","object":"realtime.session","model":"gpt-4o-realtime-preview",`+
			`"client_secret":{"value":"ek_real_account_key","expires_at":1900000000}}`)
	}))
	t.Cleanup(up.Close)
	prices := httpguard.PriceTable{"*": testPrices["deepseek-v3.2"]}
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Prices: prices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: 10 * httpguard.Cent}}}})
	resp, body := r.post(t, "/v1/realtime/sessions", `{"model":"gpt-4o-realtime-preview","modalities":["audio","text"]}`,
		"Authorization", "Bearer vk-chat")
	assert.NotContains(t, string(body), "ek_real_account_key", "status %d", resp.StatusCode)
	assert.Zero(t, reached.Load(), "the request reached the upstream")
}

// Was a bug (found by a review):
// an upstream or fallback URL refused because it carries a key (user
// info, or a query such as Azure's ?api-key=) is echoed whole in the
// error, key included, which the command prints to stderr (and the logs
// collecting it). Secrets must never reach logs or errors; the url.Parse
// error of a malformed URL quotes it whole too.
func TestARefusedUpstreamURLDoesNotEchoItsKey(t *testing.T) {
	for _, s := range []string{
		"https://user:sk-secret-1@api.example.com/v1",
		"https://api.example.com/v1?api-key=sk-secret-1",
		"https://user:sk-secret-1@api.example.com:bad/v1",
		"sk-secret-1", // a key pasted in place of the URL
		"https:sk-secret-1",
		"ftp://api.example.com/sk-secret-1",
		"sk-secret-1:xyz",
		"//sk-secret-1",
		// a password holding a / or # unescaped ends the authority: the
		// rest of it parses as the host's port, which url.Parse quotes
		"https://user:sk-secret-1/x@api.example.com/v1",
		"https://user:sk-secret-1#x@api.example.com/v1",
	} {
		_, err := ParseUpstreamURL(s)
		require.Error(t, err, s)
		assert.NotContains(t, err.Error(), "sk-secret-1")
	}
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: https://user:sk-secret-1@api.example.com/v1\n"), "proxy.yaml")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "sk-secret-1")
}

// Was a bug: ReverseProxy removes the headers an answer's Connection
// header names, after the stack: an upstream naming X-Should-Retry there
// (a 503 answered with "Connection: keep-alive, x-should-retry") stripped
// the "false" the Retrier set, and the tenant's SDK retried, twice more by
// default, what the proxy had retried three times already.
func TestAnUpstreamCannotStripTheHeadersTheStackSets(t *testing.T) {
	var sent atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		sent.Add(1)
		w.Header().Set("Connection", "keep-alive, X-Should-Retry")
		w.Header().Add("Connection", "x-httpguard-target,x-hop")
		w.Header().Set("X-Hop", "hop-by-hop")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	resp, _ := r.post(t, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.Empty(t, resp.Header.Get("X-Hop"), "what the upstream names hop-by-hop still goes")
	assert.EqualValues(t, 4, sent.Load(), "1 attempt + 3 retries")
}

// withoutStackHeaders leaves a Connection header that names none of the
// stack's headers as it is, and allocates nothing for it: every answer
// with a Connection header passes through it.
func TestWithoutStackHeadersKeepsOtherNamesWithoutAllocating(t *testing.T) {
	for in, want := range map[string]string{
		"keep-alive": "keep-alive", "Keep-Alive, x-hop": "Keep-Alive, x-hop",
		"keep-alive, X-Should-Retry": "keep-alive", "x-httpguard-target,x-hop": "x-hop", " x-should-retry ": "",
	} {
		assert.Equal(t, want, withoutStackHeaders(in), in)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { withoutStackHeaders("Keep-Alive, x-hop") }))
}

// Was a bug: a password starting with digits and holding a /, ? or #
// unescaped (https://user:1234/sk-secret-1@api.example.com/v1) ends the
// URL's authority at host "user", port 1234, the rest parsing as the
// path: the URL was taken, and its path, the password's end, logged whole
// in "httpguard proxy listening"; with a ? it was refused with the host,
// "user:1234", quoted: the password's start.
func TestAnUpstreamURLWhosePasswordEndsItsAuthorityIsRefusedUnshown(t *testing.T) {
	for _, s := range []string{
		"https://user:1234/sk-secret-1@api.example.com/v1",
		"https://:1234/sk-secret-1@api.example.com/v1",
		"https://user:1234?sk-secret-1@api.example.com/v1",
		"https://user:1234#sk-secret-1@api.example.com/v1",
	} {
		_, err := ParseUpstreamURL(s)
		require.Error(t, err, s)
		assert.NotContains(t, err.Error(), "sk-secret-1", s)
		assert.NotContains(t, err.Error(), "1234", s)
	}
	// An @ in the path, escaped, is the path's.
	_, err := ParseUpstreamURL("https://api.example.com/v1/models/claude%4020240620")
	require.NoError(t, err)
}
