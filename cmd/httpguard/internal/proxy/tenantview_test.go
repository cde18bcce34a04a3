package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A tenant sees its own limits and its own budget: what it can act on
// (how long to wait, a lower max_tokens), never the upstream's host (the
// limiters' and breakers' key) nor the figures of the budget the proxy
// shares among its clients. The operator's access log keeps the whole
// message, without a secret.

// oneTenant is a proxy with one OpenAI upstream, srv, and tenant "chat"
// (key vk-chat) with limits l and budget b (nil: none), plus the proxy's
// own limits and budget.
func oneTenant(t *testing.T, srv *httpguardtest.Server, l LimitSpec, b *BudgetSpec, proxyLimits LimitSpec, proxyBudget *BudgetSpec) *running {
	return start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, srv.BaseURL()), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Prices: testPrices, Limits: proxyLimits, Budget: proxyBudget,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Limits: l, Budget: b}}})
}

// refusedSecond sends chatBody twice and returns the second answer's
// error message, which must be a 429.
func refusedSecond(t *testing.T, r *running, body string) (*http.Response, string) {
	t.Helper()
	resp, out := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	resp, out = r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	_, code, msg := errorOf(t, out)
	require.Equal(t, "rate_limit_exceeded", code)
	return resp, msg
}

func TestRateLimitRefusalsNameNoUpstreamHost(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	long := faultServer(t, httpguardtest.Config{CompletionTokens: 6000}) // answers use what max_tokens allows
	once := LimitSpec{RPS: 0.01, Burst: 1, MaxWait: -1}                  // one request, then 100s to the next
	for _, c := range []struct {
		name                string
		srv                 *httpguardtest.Server
		tenant, proxy       LimitSpec
		body, whose, advice string
		operatorLogMentions string
	}{
		{"the tenant's own requests", srv, once, LimitSpec{}, chatBody, "this key's rate limits allow no request now", "retry after 100s", "by the requests bucket"},
		{"the proxy's requests, shared", srv, LimitSpec{}, once, chatBody, "the rate limits this proxy shares among its clients allow no request now", "retry after 100s", "by the requests bucket"},
		{"the tenant's own tokens", long, LimitSpec{TPM: 10_000, MaxWait: -1}, LimitSpec{}, strings.Replace(chatBody, `"max_tokens":16`, `"max_tokens":6000`, 1),
			"this key's rate limits have no room yet for this request's tokens, estimated at 6013", "lower max_tokens to need fewer", "by the tokens bucket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := c.srv
			r := oneTenant(t, srv, c.tenant, nil, c.proxy, nil)
			resp, msg := refusedSecond(t, r, c.body)
			assert.NotContains(t, msg, host(srv), "the upstream's host is the operator's")
			assert.NotContains(t, msg, "127.0.0.1")
			assert.NotContains(t, msg, "key \"", "the bucket's key names the host")
			assert.Contains(t, msg, c.whose)
			assert.Contains(t, msg, c.advice)
			assert.Contains(t, msg, "retry after "+resp.Header.Get("Retry-After")+"s", "the wait the Retry-After header gives")
			logged := r.lastLog(t, 2)["error"]
			bucket := host(srv) // the shared limits' buckets are the upstream's host and model
			if c.tenant.isSet() {
				bucket = `key "tenant chat"` // a tenant's one bucket
			}
			assert.Contains(t, logged, bucket, "the operator's log has the whole message")
			assert.Contains(t, logged, c.operatorLogMentions)
		})
	}
}

// A pause a 429 asked for holds every client of the upstream's limits.
func TestAPauseRefusalNamesNoUpstreamHost(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "100")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Limits: LimitSpec{RPS: 100, MaxWait: -1}, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the upstream's own 429: %s", out)
	resp, out = r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	_, code, msg := errorOf(t, out)
	assert.Equal(t, "rate_limit_exceeded", code)
	assert.Equal(t, "rate limited: the upstream asked this proxy to pause, for all its clients: retry after "+resp.Header.Get("Retry-After")+"s", msg)
	assert.NotContains(t, msg, strings.TrimPrefix(up.URL, "http://"))
	assert.Contains(t, r.lastLog(t, 2)["error"], "a pause the server asked for")
}

func TestTheSharedBudgetsRefusalsShowNoFigures(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	tiny := &BudgetSpec{Limit: 10 * httpguard.Nanodollar}
	r := oneTenant(t, srv, LimitSpec{}, &BudgetSpec{Limit: httpguard.Dollar}, LimitSpec{}, tiny)
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	typ, code, msg := errorOf(t, out)
	assert.Equal(t, "insufficient_quota", typ)
	assert.Equal(t, "budget_exceeded:proxy", code)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.NotContains(t, msg, "$", "no money of the shared budget: what it holds, what remains")
	assert.NotContains(t, msg, "remains")
	assert.NotContains(t, msg, "until", "nor when its window resets")
	assert.Contains(t, msg, "the budget this proxy shares among its clients has no room for this request")
	assert.Contains(t, msg, "16 output tokens from max_tokens; lower max_tokens to need less", "what the client can change")
	logged := r.lastLog(t, 1)["error"]
	assert.Contains(t, logged, "remains", "the operator's log has the figures")
	resp, out = r.post(t, "/v1/chat/completions", strings.Replace(chatBody, `"max_tokens":16,`, "", 1), "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	_, _, msg = errorOf(t, out)
	assert.Contains(t, msg, "4096 output tokens from this proxy's default, as the request sets no max_tokens; set max_tokens to need less",
		"the library's setting, as a client knows it")

	// A tenant's own budget is the tenant's to know.
	r = oneTenant(t, srv, LimitSpec{}, tiny, LimitSpec{}, nil)
	resp, out = r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	_, code, msg = errorOf(t, out)
	assert.Equal(t, "budget_exceeded:chat", code)
	assert.Contains(t, msg, `the "chat" budget of this proxy has no room for this request: model "deepseek-v3.2" needs $`)
	assert.Contains(t, msg, "remains")
}

// A provider reports the real key's limits, and what remains of them, in
// headers on every answer: figures of the account all tenants share.
func TestTenantsDoNotSeeTheAccountsRateLimitHeaders(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Ratelimit-Limit-Requests", "10000")
		h.Set("X-Ratelimit-Remaining-Tokens", "1999000")
		h.Set("Anthropic-Ratelimit-Tokens-Remaining", "79000")
		h.Set("Retry-After", "1")
		h.Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	t.Cleanup(up.Close)
	tenants := startBudgetedTenant(t, up.URL)
	resp, out := tenants.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	for _, h := range []string{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Tokens", "Anthropic-Ratelimit-Tokens-Remaining"} {
		assert.Empty(t, resp.Header.Values(h), h)
	}
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	// Without tenants, the clients hold the key: the headers are theirs.
	open := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	resp, out = open.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "1999000", resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
}

// The upstream's 429, passed through once the retries are spent, speaks
// of the real key's account: OpenAI's names its organization and the
// figures of its limits. A tenant reads the same error type and code, and
// how long to wait; the operator's log has the provider's message.
func TestAnUpstreams429SpeaksOfTheAccountWithoutItsDetails(t *testing.T) {
	const orgMessage = "Rate limit reached for deepseek-v3.2 in organization org-Secret123 on tokens per min (TPM): Limit 30000, Used 29957, Requested 1234."
	answers := map[string]string{
		"/v1/chat/completions": `{"error":{"message":"` + orgMessage + `","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`,
		"/v1/responses":        `{"error":{"message":"You exceeded your current quota, please check your plan and billing details (org-Secret123).","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`,
		"/v1/messages":         `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (5e1f-Secret) of 400,000 input tokens per minute."}}`,
	}
	c := accountConfig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, answers[r.URL.Path])
	})
	c.Retry = RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond} // no retries, which would wait the 2s
	r := start(t, c)

	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	typ, code, msg := errorOf(t, out)
	assert.Equal(t, "tokens", typ, "the provider's type and code, which SDKs raise by")
	assert.Equal(t, "rate_limit_exceeded", code)
	assert.Equal(t, "the upstream is rate limiting the account this proxy sends with, which its clients share: retry after 2s", msg)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"))
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.Contains(t, r.lastLog(t, 1)["error"], orgMessage, "the operator's log has the provider's message")

	resp, out = r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","input":"hi"}`, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	typ, code, msg = errorOf(t, out)
	assert.Equal(t, "insufficient_quota", typ)
	assert.Equal(t, "insufficient_quota", code)
	assert.Contains(t, msg, "no quota left at the upstream")

	resp, out = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	assert.JSONEq(t, `{"type":"error","error":{"type":"rate_limit_error","message":"the upstream is rate limiting the account this proxy sends with, which its clients share: retry after 2s"}}`, string(out))

	// Without tenants, the clients hold the key: the answer is theirs.
	open := start(t, Config{Upstreams: c.Upstreams[:1], Retry: c.Retry})
	_, out = open.post(t, "/v1/chat/completions", chatBody)
	assert.JSONEq(t, answers["/v1/chat/completions"], string(out))
}

// An upstream that cannot be reached: the tenant reads that it could not
// be, the operator's log why, with neither the query string (a signed URL's
// secret may be there), the virtual key nor the real one.
func TestTheOperatorsLogHasTheStacksErrorWithoutSecrets(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	resp, out := r.post(t, "/v1/chat/completions?sig=sk-query-secret&x=1", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusBadGateway, resp.StatusCode, string(out))
	_, code, msg := errorOf(t, out)
	assert.Equal(t, "upstream_unreachable", code)
	assert.NotContains(t, msg, strings.TrimPrefix(up.URL, "http://"))
	rec := r.lastLog(t, 1)
	logged, _ := rec["error"].(string)
	assert.Equal(t, "after 4 attempt(s): EOF", logged, "the operator learns why")
	for _, secret := range []string{"sk-query-secret", "sig=", "vk-chat", realKeys("OPENAI_KEY")} {
		assert.NotContains(t, r.logs.String(), secret)
	}
}

// A transport error quotes the URL it was sending to, with the client's
// query string (where some clients send their key) and any user info.
func TestOperatorDetailCutsAURLToItsSchemeHostAndPath(t *testing.T) {
	for raw, want := range map[string]string{
		"http://10.0.0.5:8080/v1/chat/completions?api-key=sk-query-secret": `Post "http://10.0.0.5:8080/v1/chat/completions": EOF`,
		"https://user:sk-userinfo-secret@up.example/v1/x#frag":             `Post "https://up.example/v1/x": EOF`,
		"http://up.example/v1/chat/completions":                            `Post "http://up.example/v1/chat/completions": EOF`,
		"http://[::1%zone/v1?key=sk-unparsable-secret":                     `Post "(an unparsable URL)": EOF`,
	} {
		err := fmt.Errorf("httpguard: retry: after 1 attempt(s): %w", &url.Error{Op: "Post", URL: raw, Err: io.EOF})
		assert.Equal(t, "after 1 attempt(s): "+want, operatorDetail(err), raw)
	}
}

// /readyz answers whoever reaches the proxy: it says Redis does not
// answer, not where Redis is.
func TestReadyzNamesNoRedisAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv)[:1], Redis: client, Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, err := r.client.Get(r.URL + "/readyz")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotContains(t, string(body), addr)
	assert.Contains(t, r.logs.String(), addr, "the operator's log says where")
}

// An upstream's 429 in an encoding the transport does not undo (brotli,
// sent unasked, or gzip when a fallback's headers ask for it) has its
// body replaced with the proxy's plain JSON: the encoding must go with
// it, or the tenant's client decodes the plain JSON as brotli and fails.
func TestAnUpstreams429ReplacedDropsItsContentEncoding(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "br")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte{0x1b, 0x2f, 0x00, 0xf8, 0x25, 0xa2, 0x82, 0xc2}) // not read: brotli
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Getenv: realKeys, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}},
		Retry: RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	assert.Empty(t, resp.Header.Get("Content-Encoding"), "the body is the proxy's, plain")
	_, code, _ := errorOf(t, out)
	assert.Equal(t, "rate_limit_exceeded", code)
}

// Was a bug: an upstream's 401 and 403 reached tenants as the provider
// wrote them, speaking of the real key's account: OpenAI's 401 shows the
// key's last characters, its 403 the project's ID. They now say what the
// account lacks, for the operator, keeping the status, type and code.
func TestAnUpstreams401And403SpeakOfTheAccountWithoutItsDetails(t *testing.T) {
	answers := map[string]struct {
		status int
		body   string
	}{
		"/v1/chat/completions": {401, `{"error":{"message":"Incorrect API key provided: sk-proj-********************Wx4Q. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
		"/v1/responses":        {403, `{"error":{"message":"Project proj_Secret123 does not have access to model gpt-4o","type":"invalid_request_error","param":null,"code":"model_not_found"}}`},
		"/v1/messages":         {403, `{"type":"error","error":{"type":"permission_error","message":"Your API key for organization 5e1f-Secret does not have permission to use the specified resource."}}`},
	}
	r := start(t, accountConfig(t, func(w http.ResponseWriter, r *http.Request) {
		a := answers[r.URL.Path]
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))

	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, string(out))
	typ, code, msg := errorOf(t, out)
	assert.Equal(t, "invalid_request_error", typ, "the provider's type and code, which SDKs raise by")
	assert.Equal(t, "invalid_api_key", code)
	assert.Equal(t, "the upstream refused the key this proxy sends with: this is for the proxy's operator to fix", msg)
	assert.Contains(t, r.lastLog(t, 1)["error"], "Incorrect API key provided", "the operator's log has the provider's message")

	resp, out = r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","input":"hi"}`, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusForbidden, resp.StatusCode, string(out))
	typ, code, msg = errorOf(t, out)
	assert.Equal(t, "invalid_request_error", typ)
	assert.Equal(t, "model_not_found", code)
	assert.NotContains(t, msg, "proj_Secret123")
	assert.Contains(t, msg, "for the proxy's operator to fix")

	resp, out = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusForbidden, resp.StatusCode, string(out))
	assert.JSONEq(t, `{"type":"error","error":{"type":"permission_error","message":"the upstream does not let the account this proxy sends with make this request (its model, endpoint or region): this is for the proxy's operator to fix"}}`, string(out))
}

// accountConfig is a proxy config for one tenant, "chat" (key vk-chat),
// sending under /v1 to an OpenAI upstream and under /v1/messages to an
// Anthropic one, both a loopback server answering JSON with answer after
// reading the request's body.
func accountConfig(t *testing.T, answer func(http.ResponseWriter, *http.Request)) Config {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		answer(w, r)
	}))
	t.Cleanup(up.Close)
	return Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"},
		{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv: realKeys, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}}
}
