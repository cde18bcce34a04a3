package proxy

import (
	"bufio"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests of fallbacks and breakers run the proxy in front of two
// fault servers: the upstream (the primary) and its fallback, "second".

const secondKey = "sk-second-secret"

var fallbackPrices = func() httpguard.PriceTable {
	t := maps.Clone(testPrices)
	t["gpt-4.1-mini"] = httpguard.Price{Input: 40 * httpguard.Cent, CachedInput: 10 * httpguard.Cent, Output: 160 * httpguard.Cent}
	return t
}()

func fallbackKeys(name string) string {
	if name == "SECOND_KEY" {
		return secondKey
	}
	return realKeys(name)
}

// failoverConfig routes /v1 to primary, falling back to second (asked for
// gpt-4.1-mini instead of deepseek-v3.2) once 3 failures in a row open the
// primary's circuit for a minute; tenant "chat" has a $1 budget.
func failoverConfig(t *testing.T, primary, second *httpguardtest.Server) Config {
	return Config{
		Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, primary.BaseURL()), KeyEnv: "OPENAI_KEY",
			Breaker: &BreakerSpec{ConsecutiveFailures: 3, CoolDown: time.Minute},
			Fallbacks: []Fallback{{Name: "second", URL: mustURL(t, second.BaseURL()), KeyEnv: "SECOND_KEY",
				Header: http.Header{"X-Team": {"search"}}, Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}}}}},
		Prices:  fallbackPrices,
		Getenv:  fallbackKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}},
	}
}

func (r *running) tenantBudget(t *testing.T, name string) *httpguard.Budget {
	t.Helper()
	for _, tn := range r.tenants {
		if tn.Name == name {
			return tn.budget
		}
	}
	t.Fatalf("no tenant %q", name)
	return nil
}

func host(srv *httpguardtest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

func TestTheFallbackAnswersWhileThePrimaryIsDown(t *testing.T) {
	primary := faultServer(t, httpguardtest.Config{})
	second := faultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := start(t, failoverConfig(t, primary, second))

	const n = 10
	for i := range n {
		resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		require.Equal(t, http.StatusOK, resp.StatusCode, "request %d: %s", i, body)
		assert.Equal(t, "second", resp.Header.Get(httpguard.TargetHeader))
	}
	assert.EqualValues(t, 3, primary.Stats().Requests, "the dead primary is hit until its circuit opens, then never")
	got := second.Requests()
	require.Len(t, got, n)
	want := strings.Replace(chatBody, `"deepseek-v3.2"`, `"gpt-4.1-mini"`, 1)
	for _, req := range got {
		assert.Equal(t, "/v1/chat/completions", req.Path)
		assert.Equal(t, "Bearer "+secondKey, req.Header.Get("Authorization"), "the fallback's key, from the environment")
		assert.Equal(t, "search", req.Header.Get("X-Team"))
		assert.Equal(t, want, string(req.Body), "the model rewritten, every other byte as the client sent it")
	}

	resp, body := r.post(t, "/v1/chat/completions", streamBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "second", resp.Header.Get(httpguard.TargetHeader))
	assert.True(t, strings.HasSuffix(string(body), "data: [DONE]\n\n"), "the second's stream, whole")
	assert.NotContains(t, string(body), `"choices":[]`, "the usage chunk the proxy asked for is stripped")
	sent := second.Requests()[n]
	assert.Contains(t, string(sent.Body), `"model":"gpt-4.1-mini"`)
	assert.Contains(t, string(sent.Body), `"include_usage":true`, "the Budget below the Fallback asked the second for the usage")
	assert.Equal(t, fallbackPrices["gpt-4.1-mini"].Cost(httpguard.Usage{InputTokens: second.Stats().PromptTokens,
		OutputTokens: second.Stats().CompletionTokens}), r.tenantBudget(t, "chat").Spent(), "every answer charged at the second's price")

	first, last := r.lastLog(t, 1), r.lastLog(t, n)
	assert.Equal(t, "second", first["target"])
	assert.EqualValues(t, 1, first["fallbacks"])
	assert.EqualValues(t, 4, first["attempts"], "three on the primary, whose circuit then opened, and one on the second")
	assert.Equal(t, "second", last["target"])
	assert.EqualValues(t, 1, last["fallbacks"])
	assert.EqualValues(t, 1, last["attempts"])

	assert.Contains(t, r.logs.String(), `"level":"WARN","msg":"httpguard: breaker: circuit open","key":"`+host(primary)+` deepseek-v3.2"`)
	metrics := r.metricsText(t)
	for _, want := range []string{
		`httpguard_breaker_state_changes_total{httpguard_circuit="` + host(primary) + ` deepseek-v3.2",httpguard_from="closed",httpguard_to="open"} 1`,
		// The first request moved on the 503 that opened the circuit, every later one on the open circuit.
		`httpguard_fallback_switches_total{httpguard_from="` + host(primary) + `",httpguard_reason="status_503",httpguard_to="second",tenant="chat",upstream="/v1"} 1`,
		`httpguard_fallback_switches_total{httpguard_from="` + host(primary) + `",httpguard_reason="circuit_open",httpguard_to="second",tenant="chat",upstream="/v1"} ` + strconv.Itoa(n),
	} {
		assert.Contains(t, metrics, want)
	}
	for _, secret := range []string{secondKey, "sk-real-openai", "vk-chat", "SECOND_KEY"} {
		assert.NotContains(t, r.logs.String(), secret)
		assert.NotContains(t, metrics, secret)
	}
}

func TestEveryTargetDownIsA503CircuitOpenNotToRetry(t *testing.T) {
	primary := faultServer(t, httpguardtest.Config{})
	second := faultServer(t, httpguardtest.Config{})
	for _, srv := range []*httpguardtest.Server{primary, second} {
		require.NoError(t, srv.StartOutage(httpguardtest.ServiceUnavailable()))
	}
	c := failoverConfig(t, primary, second)
	c.Upstreams = append(c.Upstreams, Upstream{Prefix: "/v1/messages", URL: mustURL(t, primary.BaseURL()+"/messages"), API: Anthropic,
		KeyEnv: "ANTHROPIC_KEY", Breaker: &BreakerSpec{ConsecutiveFailures: 1, CoolDown: time.Minute}})
	r := start(t, c)

	before := time.Now()
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the last target's own 503: its circuit opened on it")
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 60, secs, 1, "until the first circuit's cool-down ends")
	ms, err := strconv.ParseInt(resp.Header.Get("Retry-After-Ms"), 10, 64)
	require.NoError(t, err)
	assert.LessOrEqual(t, ms, int64(60_000))
	assert.Greater(t, ms, int64(60_000-time.Since(before).Milliseconds()-1000))
	assert.JSONEq(t, `{"error":{"message":`+jsonString(t, body, "error", "message")+`,"type":"server_error","param":null,"code":"circuit_open"}}`, string(body))
	for _, h := range []string{host(primary), host(second)} {
		assert.NotContains(t, string(body), h, "a tenant is not told the targets' hosts")
	}
	for range 2 {
		resp, body = r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		_, code, _ := errorOf(t, body)
		assert.Equal(t, "circuit_open", code)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}
	assert.EqualValues(t, 3, primary.Stats().Requests, "each target is hit until its circuit opens, then never")
	assert.EqualValues(t, 3, second.Stats().Requests)
	rec := r.lastLog(t, 4)
	assert.Equal(t, "circuit_open", rec["refusal"])
	assert.EqualValues(t, 1, rec["fallbacks"])
	assert.EqualValues(t, 0, rec["attempts"])
	assert.Nil(t, rec["target"], "no target answered")

	// One target, and Anthropic's error shape.
	anthropic := `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	resp, _ = r.post(t, "/v1/messages", anthropic, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the upstream's own 503 after the retries: its circuit opened on the first")
	resp, body = r.post(t, "/v1/messages", anthropic, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.JSONEq(t, `{"type":"error","error":{"type":"api_error","code":"circuit_open","message":`+jsonString(t, body, "error", "message")+`}}`, string(body))
}

func TestBudgetsChargeEachTargetsPriceAndNeverPassTheLimit(t *testing.T) {
	primary := faultServer(t, httpguardtest.Config{})
	second := faultServer(t, httpguardtest.Config{})
	c := failoverConfig(t, primary, second)
	limit := 200 * httpguard.Microdollar
	c.Tenants[0].Budget = &BudgetSpec{Limit: limit}
	r := start(t, c)
	budget := r.tenantBudget(t, "chat")

	for i := range 3 {
		resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.Equal(t, "upstream", resp.Header.Get(httpguard.TargetHeader), "the primary answers while it is up, named without its host")
		require.Equal(t, host(primary), r.lastLog(t, i+1)["target"], "the operator's log names its host")
	}
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		switch resp.StatusCode {
		case http.StatusOK:
			assert.Equal(t, "second", resp.Header.Get(httpguard.TargetHeader))
		case http.StatusTooManyRequests:
			_, code, _ := errorOf(t, body)
			require.Equal(t, "budget_exceeded:chat", code)
			refused = true
		default:
			t.Fatalf("answer %d: %s", resp.StatusCode, body)
		}
	}
	require.True(t, refused, "the budget ran out")
	require.Positive(t, second.Stats().Status[200])

	answeredAt := func(srv *httpguardtest.Server, p httpguard.Price) httpguard.Money {
		st := srv.Stats()
		return p.Cost(httpguard.Usage{InputTokens: st.PromptTokens, CachedInputTokens: st.CachedTokens, OutputTokens: st.CompletionTokens})
	}
	primaryPrice, secondPrice := fallbackPrices["deepseek-v3.2"], fallbackPrices["gpt-4.1-mini"]
	answered := answeredAt(primary, primaryPrice) + answeredAt(second, secondPrice)
	assert.Equal(t, answered, budget.Spent(), "each answer charged at the price of the model its target was asked for")
	assert.LessOrEqual(t, billableAt(primary, primaryPrice)+billableAt(second, secondPrice), budget.Spent(),
		"what the servers may bill stays within what was charged")
	assert.LessOrEqual(t, budget.Spent(), limit)
	assert.Greater(t, answeredAt(second, secondPrice), httpguard.Money(0))
}

// cutStream is an upstream whose chat stream sends its first event, then
// ends without [DONE]: by resetting the connection, or by ending the
// answer as if it were whole.
func cutStream(t *testing.T, reset bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		if reset {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAStreamCutAfterItsFirstBytesReachesTheClientAsAnErrorWithoutFallback(t *testing.T) {
	for _, tc := range []struct {
		name             string
		reset, fallbacks bool
	}{
		{"reset, with a fallback", true, true},
		{"ended without [DONE], with a fallback", false, true},
		{"ended without [DONE], no fallback and no breaker block", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := cutStream(t, tc.reset)
			second := faultServer(t, httpguardtest.Config{})
			c := Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}}
			header := []string{}
			if tc.fallbacks {
				c = failoverConfig(t, second, second)
				c.Upstreams[0].URL = mustURL(t, up.URL+"/v1")
				header = []string{"Authorization", "Bearer vk-chat"}
			}
			r := start(t, c)
			req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", strings.NewReader(streamBody))
			require.NoError(t, err)
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			resp, err := r.client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Contains(t, first, `"first"`)
			_, err = io.ReadAll(br)
			assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client sees the cut, never a clean end")
			assert.Zero(t, second.Stats().Requests, "no fallback once a byte reached the client")
			rec := r.lastLog(t, 1)
			assert.EqualValues(t, 0, rec["fallbacks"])
		})
	}
}

func TestWithoutABreakerBlockCircuitsOpenOnlyWhereThereAreFallbacks(t *testing.T) {
	alone := faultServer(t, httpguardtest.Config{})
	primary := faultServer(t, httpguardtest.Config{})
	second := faultServer(t, httpguardtest.Config{})
	for _, srv := range []*httpguardtest.Server{alone, primary} {
		require.NoError(t, srv.StartOutage(httpguardtest.ServiceUnavailable()))
	}
	c := failoverConfig(t, primary, second)
	c.Upstreams[0].Breaker = nil
	c.Upstreams = append(c.Upstreams, Upstream{Prefix: "/alone", URL: mustURL(t, alone.BaseURL()), KeyEnv: "OPENAI_KEY"})
	r := start(t, c)
	for range 3 {
		resp, _ := r.post(t, "/alone/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.NotEqual(t, "circuit_open", r.lastLog(t, 1)["refusal"])
	}
	assert.EqualValues(t, 12, alone.Stats().Requests, "with nowhere else to go, every attempt is sent: no circuit opens")
	for range 3 {
		resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}
	assert.EqualValues(t, httpguard.DefaultConsecutiveFailures, primary.Stats().Requests, "the library's default breaker")
}

// A fallback that cannot be reached (its connections refused) never
// received the request: the client gets the upstream's 429, with the
// Retry-After that says when to come back, not a 502.
func TestTheUpstreamsAnswerReachesTheClientWhenItsFallbackCannotBeReached(t *testing.T) {
	primary := faultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.RateLimited(20*time.Second)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refusing := "http://" + l.Addr().String() + "/v1"
	require.NoError(t, l.Close())
	c := failoverConfig(t, primary, primary)
	c.Upstreams[0].Fallbacks[0].URL = mustURL(t, refusing)
	c.Retry = RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond} // no retries, which would wait the 20s
	r := start(t, c)

	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")

	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", body)
	assert.Equal(t, "20", resp.Header.Get("Retry-After"))
	assert.Equal(t, "upstream", resp.Header.Get(httpguard.TargetHeader))
	assert.Contains(t, string(body), "rate_limit_exceeded")
	assert.EqualValues(t, 1, primary.Stats().Requests)
}
