package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUpstreamPathTakesThePlaceOfThePrefix(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		mu.Unlock()
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{
		{Prefix: "/v1", URL: mustURL(t, up.URL+"/api/openai/v1")},
		{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/anthropic/v1/messages"), API: Anthropic},
	}})
	r.post(t, "/v1/chat/completions?x=1", chatBody)
	r.post(t, "/v1/messages", chatBody)
	r.post(t, "/v1/messages/count_tokens", chatBody)
	r.post(t, "/v1/files/a%2Fb", `{}`)
	resp, _ := r.post(t, "/v2/chat/completions", chatBody)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = r.post(t, "/v1x/chat/completions", chatBody)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "prefixes match whole segments")
	assert.Equal(t, []string{"/api/openai/v1/chat/completions?x=1", "/anthropic/v1/messages",
		"/anthropic/v1/messages/count_tokens", "/api/openai/v1/files/a%2Fb"}, paths)
}

func TestRetriesUnderFaults(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.Enqueue(httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset(),
		httpguardtest.RateLimited(time.Millisecond)))
	r := start(t, Config{Upstreams: upstreams(t, srv)})
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), `"chat.completion"`)
	assert.EqualValues(t, 4, srv.Stats().Requests)
	rec := r.lastLog(t, 1)
	assert.EqualValues(t, 4, rec["attempts"])
	assert.EqualValues(t, 3, rec["retries"])
	assert.EqualValues(t, 200, rec["status"])
	assert.Greater(t, rec["wait_ms"], 0.0, "the retries waited")
}

// The upstream holds every attempt until the proxy gives up on it, so
// that only whether AttemptTimeout fires matters, not how soon a loaded
// machine answers a retry: both attempts time out, and the client hears
// so.
func TestAnAttemptWhoseHeadersStallIsRetriedAfterAttemptTimeout(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.StartOutage(httpguardtest.SlowHeaders(time.Hour)))
	r := start(t, Config{Upstreams: upstreams(t, srv), Transport: &reachingTransport{srv: srv, next: NewTransport()},
		Retry: RetrySpec{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, AttemptTimeout: 50 * time.Millisecond}})
	resp, body := r.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode, string(body))
	_, code, msg := errorOf(t, body)
	assert.Equal(t, "upstream_timeout", code)
	assert.Contains(t, msg, "after 2 attempt(s)")
	assert.EqualValues(t, 2, srv.Stats().Requests)
	rec := r.lastLog(t, 1)
	assert.EqualValues(t, 2, rec["attempts"])
	assert.EqualValues(t, 1, rec["retries"])
}

// reachingTransport is next, but for the end of an attempt's context (its
// AttemptTimeout firing), which it passes on only once srv has counted the
// attempt: dialling and writing a request may outlast the timeout on a
// loaded machine, and the attempt would end before srv saw it. An attempt
// srv holds still times out: the Retrier reads its own timer, not the
// transport's error. (integration's reachesServer does the same.)
type reachingTransport struct {
	srv  *httpguardtest.Server
	next *http.Transport
	sent atomic.Int64
}

func (t *reachingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	n := t.sent.Add(1)
	returned := make(chan struct{})
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	context.AfterFunc(r.Context(), func() {
		defer cancel(context.Cause(r.Context()))
		for t.srv.Stats().Requests < n {
			select {
			case <-returned: // it never will arrive: a dial failed, say
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	resp, err := t.next.RoundTrip(r.WithContext(ctx))
	close(returned)
	return resp, err
}

func (t *reachingTransport) CloseIdleConnections() { t.next.CloseIdleConnections() }

func TestTheUpstreamsLastAnswerPassesThroughMarkedNotToRetry(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.StartOutage(httpguardtest.ServiceUnavailable()))
	r := start(t, Config{Upstreams: upstreams(t, srv)})
	resp, body := r.post(t, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	typ, _, msg := errorOf(t, body)
	assert.Equal(t, "server_error", typ)
	assert.Equal(t, "The server is temporarily unable to handle the request.", msg, "the upstream's own body")
	assert.EqualValues(t, 4, srv.Stats().Requests, "1 attempt + 3 retries")
}

func TestUpstreamUnreachableIs502NotToRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String() + "/v1"
	ln.Close()
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, dead)}}})
	resp, body := r.post(t, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	_, code, msg := errorOf(t, body)
	assert.Equal(t, "upstream_unreachable", code)
	assert.Contains(t, msg, "after 4 attempt(s)")
}

// heldStream is an upstream whose stream sends its first event, then waits
// for release before the rest.
func heldStream(t *testing.T) (srv *httptest.Server, release chan struct{}) {
	release = make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":" second"}}]}`+"\n\n")
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}`+"\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv, release
}

const streamBody = `{"model":"deepseek-v3.2","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

func TestStreamsFlushEachEventBeforeTheUpstreamFinishes(t *testing.T) {
	up, release := heldStream(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	br := r.openStream(t)
	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Contains(t, string(rest), `" second"`)
	assert.Contains(t, string(rest), "[DONE]")
	assert.NotContains(t, string(rest), `"usage"`, "the usage chunk the proxy asked for is stripped")
	rec := r.lastLog(t, 1)
	want := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 2})
	assert.Equal(t, want.String(), rec["spend"], "the stream's usage is charged")
	assert.Equal(t, want, r.budget.Spent())
}

func TestStreamUsageIsCountedAsTheServerBilledIt(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{CachedTokens: 2})
	r := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, body := r.post(t, "/v1/chat/completions", streamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.True(t, strings.HasSuffix(string(body), "data: [DONE]\n\n"))
	assert.NotContains(t, string(body), `"choices":[]`)
	sent := srv.Requests()[0]
	assert.Contains(t, string(sent.Body), `"include_usage":true`, "the proxy asked for the usage")
	st := srv.Stats()
	billed := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: st.PromptTokens, CachedInputTokens: st.CachedTokens, OutputTokens: st.CompletionTokens})
	assert.Equal(t, billed, r.budget.Spent())

	resp, body = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), "event: message_stop")
	assert.Greater(t, r.budget.Spent(), billed, "Anthropic's stream is charged too")
}

func tenantsConfig(t *testing.T, srv *httpguardtest.Server) Config {
	return Config{
		Upstreams: upstreams(t, srv),
		Prices:    testPrices,
		Getenv:    realKeys,
		Tenants: []Tenant{
			{Name: "search", KeySHA256: keyHash("vk-search"), Budget: &BudgetSpec{Limit: 10 * httpguard.Nanodollar}},
			{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar, Period: httpguard.Daily},
				Models: []string{"deepseek-v3.2", "claude-sonnet-4-5", "unpriced-model"}},
		},
	}
}

func TestFreePathsPassABudgetWithoutRoomButNotTheirLookalikes(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, `{"input_tokens":5}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Prices: testPrices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "search", KeySHA256: keyHash("vk-search"), Budget: &BudgetSpec{Limit: 10 * httpguard.Nanodollar}}}})
	for path, body := range map[string]string{"/v1/messages/count_tokens": chatBody, "/v1/moderations": `{"model":"omni-moderation-latest","input":"hi"}`} {
		resp, answer := r.post(t, path, body, "Authorization", "Bearer vk-search")
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, answer)
	}
	resp, body := r.post(t, "/v1/moderations", chatBody, "Authorization", "Bearer vk-search")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "only OpenAI's moderation models are free: %s", body)
	resp, body = r.post(t, "/v1/chat/completions%2Fcount_tokens", chatBody, "Authorization", "Bearer vk-search")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "an escaped slash is not a free path's")
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "endpoint_not_metered", code, "nor a metered one's")
	assert.EqualValues(t, 2, hits.Load())
}

func TestBudgetRefusalsNameTheTenantsBudget(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-search")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	typ, code, msg := errorOf(t, body)
	assert.Equal(t, "insufficient_quota", typ)
	assert.Equal(t, "budget_exceeded:search", code)
	assert.Contains(t, msg, `the "search" budget`)
	assert.Contains(t, msg, `model "deepseek-v3.2" needs`)

	resp, body = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-search", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.JSONEq(t, `{"type":"error","error":{"type":"insufficient_quota","code":"budget_exceeded:search","message":`+
		jsonString(t, body, "error", "message")+`}}`, string(body), "Anthropic's error shape")

	resp, body = r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the other tenant's budget has room: %s", body)
	assert.Zero(t, srv.Stats().Status[429])
	assert.EqualValues(t, 1, srv.Stats().Requests, "refusals never reach the upstream")
}

func TestAProxyWideBudgetCapsEveryTenant(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Budget = &BudgetSpec{Limit: 20 * httpguard.Nanodollar}
	r := start(t, c)
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "budget_exceeded:proxy", code)
}

func TestRateLimitRefusalsCarryRetryAfter(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Tenants[1].Limits = LimitSpec{RPS: 0.5, Burst: 1, MaxWait: -1}
	r := start(t, c)
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"))
	assert.Empty(t, resp.Header.Get("X-Should-Retry"), "SDKs retry after Retry-After")
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "rate_limit_exceeded", code)
}

func TestUnknownKeysModelsAndPricesAreRefusedUnsent(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	for _, tc := range []struct {
		name, path, body string
		header           []string
		status           int
		code             string
	}{
		{"no key", "/v1/chat/completions", chatBody, nil, 401, "invalid_api_key"},
		{"unknown key", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer sk-real-openai"}, 401, "invalid_api_key"},
		{"model not allowed", "/v1/chat/completions", strings.Replace(chatBody, "deepseek-v3.2", "gpt-4.1", 1),
			[]string{"Authorization", "Bearer vk-chat"}, 403, "model_not_allowed"},
		// A tool that runs a model of its own runs one the key may use,
		// named: the provider's default could be any.
		{"tool's model not allowed", "/v1/responses", `{"model":"deepseek-v3.2","input":"a cat","tools":[{"type":"image_generation","model":"gpt-image-1"}]}`,
			[]string{"Authorization", "Bearer vk-chat"}, 403, "model_not_allowed"},
		{"tool's model nested, in another case", "/v1/responses", `{"model":"deepseek-v3.2","input":"a cat","tools":[{"type":"openrouter:image_generation","parameters":{"Model":"openai/gpt-5-image"}}]}`,
			[]string{"Authorization", "Bearer vk-chat"}, 403, "model_not_allowed"},
		{"tool's model unnamed", "/v1/responses", `{"model":"deepseek-v3.2","input":"a cat","tools":[{"type":"image_generation"}]}`,
			[]string{"Authorization", "Bearer vk-chat"}, 403, "model_not_allowed"},
		{"unpriced model", "/v1/chat/completions", strings.Replace(chatBody, "deepseek-v3.2", "unpriced-model", 1),
			[]string{"Authorization", "Bearer vk-chat"}, 400, "model_not_priced"},
		{"model named twice", "/v1/chat/completions", `{"model":"deepseek-v3.2","model":"gpt-4.1"}`,
			[]string{"Authorization", "Bearer vk-chat"}, 400, ""},
		// A body whose model the proxy cannot read could name any model.
		{"model unreadable: NaN", "/v1/chat/completions", `{"model":"gpt-4.1","temperature":NaN}`,
			[]string{"Authorization", "Bearer vk-chat"}, 400, "model_required"},
		{"model unreadable: a form", "/v1/chat/completions", "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--",
			[]string{"Authorization", "Bearer vk-chat"}, 400, "model_required"},
		// Transcriptions bill by the minute, which their answer does not
		// report: no budget can meter them.
		{"endpoint not metered", "/v1/audio/transcriptions", "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--",
			[]string{"Authorization", "Bearer vk-chat"}, 400, "endpoint_not_metered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.post(t, tc.path, tc.body, tc.header...)
			assert.Equal(t, tc.status, resp.StatusCode)
			_, code, msg := errorOf(t, body)
			assert.Equal(t, tc.code, code)
			if tc.code == "model_not_priced" {
				assert.Contains(t, msg, `"unpriced-model"`)
			}
		})
	}
	resp, body := r.post(t, "/v1/messages", chatBody, "X-Api-Key", "nope")
	assert.Equal(t, 401, resp.StatusCode)
	assert.Equal(t, `"authentication_error"`, jsonString(t, body, "error", "type"))
	assert.Zero(t, srv.Stats().Requests)
}

func TestVirtualKeysAreSwappedForTheRealKeys(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat", "Cookie", "session=1",
		"OpenAI-Organization", "org-someone-else", "OpenAI-Project", "proj-someone-else")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = r.post(t, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "Bearer sk-real-openai", reqs[0].Header.Get("Authorization"))
	assert.Empty(t, reqs[0].Header.Get("Cookie"))
	assert.Empty(t, reqs[0].Header.Get("OpenAI-Organization"), "a tenant does not choose the account's billed organization")
	assert.Empty(t, reqs[0].Header.Get("OpenAI-Project"))
	assert.Equal(t, "sk-ant-real", reqs[1].Header.Get("X-Api-Key"))
	assert.Empty(t, reqs[1].Header.Get("Authorization"))
	assert.Equal(t, "2023-06-01", reqs[1].Header.Get("Anthropic-Version"))
	for _, req := range reqs {
		assert.NotContains(t, fmt.Sprint(req.Header), "vk-chat")
	}
}

func TestWithoutTenantsTheClientsKeyPassesThrough(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Getenv: realKeys})
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client-own")
	assert.Equal(t, "Bearer sk-client-own", srv.Requests()[0].Header.Get("Authorization"))
}

func TestTheAccessLogNeverHoldsAKeyAPromptOrAnAuthorizationHeader(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	r.post(t, "/v1/chat/completions?sig=sk-in-query", chatBody, "Authorization", "Bearer vk-chat")
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-wrong")
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-search")
	rec := r.lastLog(t, 3)
	assert.Equal(t, "search", rec["tenant"])
	first := r.accessLog(t)[0]
	for _, k := range []string{"time", "level", "msg", "method", "path", "status", "tenant", "model", "upstream", "attempts", "retries", "wait_ms", "spend", "duration_ms"} {
		assert.Contains(t, first, k)
	}
	assert.Equal(t, "chat", first["tenant"])
	assert.Equal(t, "deepseek-v3.2", first["model"])
	assert.NotEqual(t, "$0.00", first["spend"])
	logs := r.logs.String()
	for _, secret := range []string{"vk-chat", "vk-wrong", "vk-search", "sk-real-openai", "sk-in-query", "secret prompt", "Bearer", "Authorization"} {
		assert.NotContains(t, logs, secret)
	}
}

func TestSizeLimits(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := Config{Upstreams: upstreams(t, srv), MaxRequestBytes: 1024, MaxHeaderBytes: 4096}
	r := start(t, c)
	big := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	resp, body := r.post(t, "/v1/chat/completions", big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "request_too_large", code)

	// Without a Content-Length, the limit holds while reading.
	req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
	require.NoError(t, err)
	resp, err = r.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	resp, _ = r.post(t, "/v1/chat/completions", chatBody, "X-Big", strings.Repeat("h", 20000))
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	assert.Zero(t, srv.Stats().Requests)
}

func TestNoOpenProxy(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv)})
	raw := func(request string) string {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, request)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.Status
	}
	body := fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(chatBody), chatBody)
	assert.Equal(t, "400 Bad Request", raw("POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\n"+body))
	assert.Equal(t, "400 Bad Request", raw("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n"))
	assert.Equal(t, "400 Bad Request", raw("POST /v1/../admin HTTP/1.1\r\nHost: x\r\n"+body))
	assert.Zero(t, srv.Stats().Requests)

	assert.Equal(t, "200 OK", raw("POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\n"+body))
	got := srv.Requests()
	require.Len(t, got, 1, "the Host header changes nothing: the request went to the upstream")
	assert.Equal(t, "/v1/chat/completions", got[0].Path)
}

func TestHealthAndReadiness(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv)})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := r.client.Get(r.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	r.draining.Store(true)
	resp, err := r.client.Get(r.URL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	r.draining.Store(false)
}

func TestMetricsAreExposedAfterTraffic(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.Enqueue(httpguardtest.ServiceUnavailable()))
	r := start(t, tenantsConfig(t, srv))
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-search")
	text := r.metricsText(t)
	for _, want := range []string{
		`httpguard_attempts_total{http_response_status_code="200",tenant="chat"} 1`,
		`httpguard_attempts_total{http_response_status_code="503",tenant="chat"} 1`,
		`httpguard_retries_total{httpguard_reason="status_503",tenant="chat",upstream="/v1"} 1`,
		`httpguard_refusals_total{httpguard_layer="budget",httpguard_reason="budget_exceeded",tenant="search"} 1`,
		`httpguard_spend_USD_total{gen_ai_request_model="deepseek-v3.2",tenant="chat"}`,
		`httpguard_budget_remaining_USD{budget="search"} 1e-08`,
		`httpguard_tokens_total{gen_ai_request_model="deepseek-v3.2",gen_ai_token_type="output",tenant="chat"} 16`,
		`httpguard_requests_total{`,
	} {
		assert.Contains(t, text, want)
	}
}

// --max-request-bytes is what the proxy accepts, so it is what its Budgets
// price and its Limiters read: a body over the library's 4 MiB default but
// within the proxy's bound is priced and sent, not refused as unpriceable.
func TestABodyTheProxyAcceptsIsPricedWhateverItsSize(t *testing.T) {
	var got atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
	}))
	t.Cleanup(api.Close)
	u, err := ParseUpstreamURL(api.URL + "/v1")
	require.NoError(t, err)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: u, API: OpenAI, KeyEnv: "OPENAI_KEY"}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: 1000 * httpguard.Dollar}, MaxRequestBytes: 6 << 20,
		Limits: LimitSpec{TPM: 100_000_000}})
	big := `{"model":"deepseek-v3.2","max_tokens":1,"messages":[{"role":"user","content":"` + strings.Repeat("a", 5<<20) + `"}]}`
	resp, body := r.post(t, "/v1/chat/completions", big)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.EqualValues(t, len(big), got.Load())
	assert.Equal(t, testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 5, OutputTokens: 1}), r.budget.Spent())
}

// A client that waits what the headers say comes back when the wait is
// over, never before: both headers round up.
func TestRetryAfterHeadersRoundTheWaitUp(t *testing.T) {
	for _, tc := range []struct {
		wait       time.Duration
		secs, msec string
	}{
		{0, "1", "1"},
		{time.Millisecond, "1", "1"},
		{1500 * time.Microsecond, "1", "2"},
		{999*time.Millisecond + 1, "1", "1000"},
		{2 * time.Second, "2", "2000"},
		{2*time.Second + time.Nanosecond, "3", "2001"},
	} {
		h := retryAfter(tc.wait)
		assert.Equal(t, tc.secs, h.Get("Retry-After"), "%v", tc.wait)
		assert.Equal(t, tc.msec, h.Get("Retry-After-Ms"), "%v", tc.wait)
	}
}

func TestTenantsDoNotSeeTheRealKeysOrganization(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("OpenAI-Organization", "org-real-account")
		w.Header().Set("OpenAI-Project", "proj_real")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}`)
	}))
	t.Cleanup(up.Close)
	body := `{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	resp, out := startBudgetedTenant(t, up.URL).post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Empty(t, resp.Header.Get("OpenAI-Organization"))
	assert.Empty(t, resp.Header.Get("OpenAI-Project"))

	// Without tenants the proxy is the caller's own sidecar: its account's
	// headers pass.
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	resp, out = r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer sk-own")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "org-real-account", resp.Header.Get("OpenAI-Organization"))
}

// With tenants, a client on the proxy's listener must not read the
// metrics: they name every tenant and upstream, and what each budget has
// left. The operator serves Metrics on a listener of its own.
func TestMetricsAreNotServedToTenants(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, tenantsConfig(t, srv))
	r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	for _, auth := range []string{"", "Bearer vk-chat"} {
		req, err := http.NewRequest(http.MethodGet, r.URL+"/metrics", nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assert.NotContains(t, string(b), "chat")
	}
	assert.Contains(t, r.metricsText(t), `tenant="chat"`)
}

// A function's parameters are the caller's schema: a property named model
// runs none. A tool naming a model the key may use passes.
func TestToolsRunningAllowedModelsPass(t *testing.T) {
	for _, tools := range []string{
		`[{"type":"function","function":{"name":"pick","parameters":{"type":"object","properties":{"model":{"type":"string","default":"gpt-4.1"}}},"model":"gpt-4.1"}}]`,
		`[{"type":"image_generation","model":"deepseek-v3.2"}]`,
		// Anthropic's client tools name no type: input_schema is the caller's.
		`[{"name":"pick","input_schema":{"type":"object","properties":{"car":{"type":"object","examples":[{"make":"Ford","model":"Focus"}]}}}}]`,
	} {
		f, err := readRequest([]byte(`{"model":"deepseek-v3.2","input":"a cat","tools":` + tools + `}`))
		require.NoError(t, err)
		assert.Empty(t, toolNotAllowed(&f, []string{"deepseek-v3.2"}), tools)
		assert.Empty(t, toolNotAllowed(&f, nil), "a key that may use any model")
	}
}
