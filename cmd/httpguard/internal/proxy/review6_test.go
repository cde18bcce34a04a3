package proxy

// Found by the sixth adversarial review; each test failed before its fix.

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: an upstream that echoes the key it was sent (a relay's
// "key sk-… may not use this model", a redirect or a debug header
// carrying it) handed the real key, which every tenant shares, to the
// tenant, whole: the proxy passed error bodies and headers through as the
// upstream wrote them, and the provider's 429 message into the log.
func TestAnUpstreamEchoingTheRealKeyShowsItToNoTenant(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("as") {
		case "error":
			w.Header().Set("Location", "https://elsewhere.example/?key="+key)
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"key `+key+` may not use this model","type":"invalid_request_error"}}`)
		case "403":
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"message":"key `+key+` may not use this model","type":"permission_error"}}`)
		case "stream": // the key split across two events' flushes
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"choices":[{"delta":{"content":"`+key[:5])
			w.(http.Flusher).Flush()
			io.WriteString(w, key[5:]+`"}}]}`+"\n\ndata: [DONE]\n\n")
		case "429":
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"message":"rate limited for key `+key+`","type":"requests"}}`)
		}
	}))
	t.Cleanup(up.Close)
	const realKey = "sk-proj-Xk9c2Lw7RtQ1vB8nZ3yH5mJ0pA6dF4gE"
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Getenv: func(string) string { return realKey },
		Retry:  RetrySpec{BaseDelay: 1, MaxDelay: 1}, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	for i, as := range []string{"error", "stream", "403", "429"} {
		resp, body := r.post(t, "/v1/chat/completions?as="+as, chatBody, "Authorization", "Bearer vk-chat")
		var header strings.Builder
		require.NoError(t, resp.Header.Write(&header))
		assert.NotContains(t, string(body)+header.String(), realKey, "%s: the tenant is shown the real key", as)
		if as != "403" && as != "429" { // whose messages the proxy replaces
			assert.Contains(t, string(body), strings.Repeat("*", len(realKey)), "%s: where the key was, as long, so that Content-Length holds", as)
		}
		assert.NotContains(t, fmt.Sprint(r.lastLog(t, i+1)["error"]), realKey, "%s: the log is shown the real key", as)
	}
}

// Was a bug: a tenant's limits were keyed as the shared ones are, by
// upstream host and model, so a tenant allowed one request per 100s sent
// one per model it named (4 at once with 4 models, one per 100s each).
func TestATenantsLimitsHoldWhateverModelItNames(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Limits: LimitSpec{RPS: 0.01, Burst: 1, MaxWait: -1}}}})
	served := 0
	for _, model := range []string{"deepseek-v3.2", "gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-flash"} {
		resp, _ := r.post(t, "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer vk-chat")
		if resp.StatusCode == http.StatusOK {
			served++
		}
	}
	assert.Equal(t, 1, served, "requests served within the tenant's burst of 1")
}

// Was a bug: a client that stops reading its answer (a tenant opening
// streams it never reads) held the proxy's goroutine, the upstream's
// connection and its budgets' reservations for as long as it kept its
// connection open: the proxy's writes had no deadline. Each write now has
// WriteStallTimeout to reach the client; the request then ends, and its
// attempt is charged.
func TestAClientThatStopsReadingIsCutAndCharged(t *testing.T) {
	upstreamDone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		event := `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 4000) + `"}}]}` + "\n\n"
		for range 4000 { // 16 MB: more than the sockets' buffers hold
			if _, err := io.WriteString(w, event); err != nil {
				return
			}
		}
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4000}}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		WriteStallTimeout: 100 * time.Millisecond,
		Tenants:           []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	body := `{"model":"deepseek-v3.2","stream":true,"max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}`
	_, err = fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// The client reads no more, and keeps its connection open.
	rec := r.lastLog(t, 1)
	assert.NotEqual(t, "$0", rec["spend"], "the attempt cut is charged")
	select {
	case <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's connection is still held")
	}
}

// Was a bug: an upstream answering 101 Switching Protocols to a request
// that asked for no upgrade (the proxy forwards none) left its connection,
// and a goroutine, open for good (ReverseProxy refuses the switch without
// closing it), and the client was told the upstream "could not be
// reached, after 0 attempt(s)".
func TestAnUnaskedProtocolSwitchIsClosedAndSaidSo(t *testing.T) {
	closed := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.ReadByte() // until the proxy closes the connection
		close(closed)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "upstream_bad_answer", code)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's connection is still open")
	}
}

// Was a bug: a tenant's GET passes the endpoint check as read-only (it
// starts nothing on the provider's side), but carried
// X-HTTP-Method-Override: POST to the upstream, which servers and API
// frontends that honour it (Google's, Express's method-override) run as
// the POST: here a fine-tuning job billed $3 against a tenant's $1
// budget, which charged nothing. A chat completion's X-Original-URL
// (IIS's URL Rewrite, Symfony) likewise made it the job.
func TestAMethodOrPathOverrideDoesNotTurnARequestIntoAJob(t *testing.T) {
	var bills bill
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		method := r.Method
		for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
			if v := r.Header.Get(h); v != "" {
				method = v
			}
		}
		path := cmp.Or(r.Header.Get("X-Original-Url"), r.Header.Get("X-Rewrite-Url"), r.URL.Path)
		if method == http.MethodPost && path == "/v1/fine_tuning/jobs" {
			bills.add(3 * httpguard.Dollar)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[]}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		req, err := http.NewRequest(http.MethodGet, r.URL+"/v1/fine_tuning/jobs", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer vk-chat")
		req.Header.Set(h, "POST")
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	for _, h := range []string{"X-Original-URL", "X-Rewrite-URL"} {
		r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat", h, "/v1/fine_tuning/jobs")
	}
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.LessOrEqual(t, billed, spent, "the provider billed %v, the tenant's budget of $1 charged %v", billed, spent)
}
