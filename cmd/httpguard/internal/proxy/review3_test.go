package proxy

// Found by a third adversarial review; each test failed before its fix.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A refused request's body is read within BodyReadTimeout too. Once the
// handler has refused a request without reading its body (an unknown
// key, a path no upstream serves, /healthz), net/http reads up to 256 KiB
// of what is left of it before it writes the answer, with no deadline: a
// client with no key that sends a Content-Length and then nothing held a
// connection and its goroutine for as long as it liked, and never got its
// 401. The README promises "request bodies read within 30s".
func TestARefusedRequestsBodyIsReadWithinBodyReadTimeout(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.BodyReadTimeout = 100 * time.Millisecond
	r := start(t, c)
	for path, status := range map[string]int{"/v1/chat/completions": 401, "/nowhere": 404, "/healthz": 200} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		_, err = conn.Write([]byte("POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\""))
		require.NoError(t, err)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if assert.NoError(t, err, "%s: the answer comes once the body's time is up", path) {
			resp.Body.Close()
			assert.Equal(t, status, resp.StatusCode, path)
		}
		conn.Close()
	}
	assert.Zero(t, srv.Stats().Requests)
}

// A request with two Content-Type headers is read by the proxy's JSON
// check as its first (application/json), and sent on with both: an
// upstream that takes the last one (a WSGI server such as gunicorn sets
// CONTENT_TYPE from each header in turn) reads the body as a form, and a
// body that is JSON naming an allowed model is also a form naming another.
// The json_required check is bypassed with one more header.
func TestTwoContentTypesAreRefusedForAKeyCheckedAsJSON(t *testing.T) {
	var mu sync.Mutex
	var models []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if ct := r.Header.Values("Content-Type"); len(ct) > 0 && ct[len(ct)-1] == "application/x-www-form-urlencoded" {
			form, _ := url.ParseQuery(string(body))
			mu.Lock()
			models = append(models, form.Get("model"))
			mu.Unlock()
		}
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	body := `{"model":"deepseek-v3.2","x":"&model=gpt-4o-transcribe&"}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer vk-chat\r\n"+
		"Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, models, "the upstream read a form naming a model the key may not use")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// A client that goes away mid-stream: the upstream's request is cancelled,
// and the stream is settled, charged what it may have cost, nothing held.
func TestAClientGoneMidStreamCancelsTheUpstreamAndSettles(t *testing.T) {
	gone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(gone)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", strings.NewReader(streamBody))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer vk-chat")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	br := bufio.NewReader(resp.Body)
	_, err = br.ReadString('\n')
	require.NoError(t, err)
	resp.Body.Close()
	r.client.CloseIdleConnections()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's request outlived the client")
	}
	rec := r.lastLog(t, 1)
	for _, b := range []*httpguard.Budget{r.tenants[0].budget, r.budget} {
		require.Eventually(t, func() bool { return b.Spent()+b.Remaining() == httpguard.Dollar }, 5*time.Second, time.Millisecond, "nothing left held")
		assert.Positive(t, b.Spent())
	}
	assert.Equal(t, r.tenants[0].budget.Spent().String(), rec["spend"])
}

// A body the Budget cannot price although its model has a price (a field
// spelled in another case, which some servers read and others ignore) was answered
// "model_not_priced: model "deepseek-v3.2" has no price": the client is
// sent to fix a price table that is fine, and never told what is wrong.
func TestABodyABudgetCannotPriceIsNotBlamedOnAPricedModel(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, body := r.post(t, "/v1/chat/completions",
		`{"model":"deepseek-v3.2","Max_Tokens":100000,"messages":[{"role":"user","content":"hi"}]}`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, code, msg := errorOf(t, body)
	assert.NotEqual(t, "model_not_priced", code, msg)
	assert.NotContains(t, msg, "has no price", "the model has a price")
	assert.Contains(t, msg, "Max_Tokens", "the message names what is wrong")
	assert.Zero(t, srv.Stats().Requests)
}

// A background response (OpenAI's Responses API with "background": true)
// is answered at once, queued, with no usage; the model then runs on the
// provider's side and bills what it spends, which no answer through the
// proxy ever reports. The Budget charges the missing usage its
// reservation (4,096 output tokens without max_output_tokens), so a
// tenant with a budget ran reasoning models unmetered: the README's
// promise that an attempt costing more than its reservation "is still
// charged in full" cannot hold. Like a Realtime session, it spends
// outside the proxy, and is refused where a budget applies.
func TestABackgroundResponseIsRefusedWhereABudgetApplies(t *testing.T) {
	var bills bill
	price := testPrices["deepseek-v3.2"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), `"background":true`) {
			// Queued: the run (here 20,000 reasoning and output tokens)
			// is billed later, and its usage is read by polling GET
			// /v1/responses/{id}, which a budget does not charge.
			bills.add(price.Cost(httpguard.Usage{InputTokens: 12, OutputTokens: 20_000}))
			io.WriteString(w, `{"id":"resp_1","object":"response","status":"queued","background":true,"usage":null}`)
			return
		}
		io.WriteString(w, `{"id":"resp_2","object":"response","status":"completed","usage":{"input_tokens":12,"output_tokens":3,"total_tokens":15}}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	for _, body := range []string{
		`{"model":"deepseek-v3.2","background":true,"input":"think about it for a long time"}`,
		`{"model":"deepseek-v3.2","background": true ,"input":"think about it for a long time"}`,
	} {
		resp, out := r.post(t, "/v1/responses", body, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	}
	resp, out := r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","background":false,"input":"hi"}`, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.LessOrEqual(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
}

func TestRunsInBackground(t *testing.T) {
	for body, want := range map[string]bool{
		`{"model":"m","background":true}`:                   true,
		`{"model":"m", "Background" : true }`:               true,
		`{"model":"m","backgr\u006fund":true}`:              true,
		`{"model":"m","background":false}`:                  false,
		`{"model":"m","background":null}`:                   false,
		`{"model":"m","metadata":{"background":true}}`:      false,
		`{"model":"m","input":"\"background\":true"}`:       false,
		`{"model":"m","tools":[{"background":true}],"n":1}`: false,
	} {
		assert.Equal(t, want, mustReadRequest(t, body).background, body)
	}
}

// A fine-tuning job names a model at the top level, so a budget prices its
// creation as a chat request and, its answer carrying no usage, charges it
// the reservation; the job then trains (and bills) on the provider's side
// on a file any tenant can list in the shared account (the README admits
// the listing). A tenant with a $1 budget starts jobs that cost far more.
//
// Where a budget applies, a request may go only to endpoints whose answer
// reports what they bill (and the free ones); the rest is refused,
// endpoint_not_metered.
func TestAFineTuningJobIsRefusedWhereABudgetApplies(t *testing.T) {
	var bills bill
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/fine_tuning/jobs" {
			bills.add(3 * httpguard.Dollar) // training tokens × epochs, billed as the job runs
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"fine_tuning.job","id":"ftjob-1","status":"validating_files"}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	resp, out := r.post(t, "/v1/fine_tuning/jobs", `{"model":"deepseek-v3.2","training_file":"file-of-another-tenant"}`, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	_, code, msg := errorOf(t, out)
	assert.Equal(t, "endpoint_not_metered", code)
	assert.Contains(t, msg, "POST /v1/fine_tuning/jobs", "the message names the path")
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.LessOrEqual(t, billed, spent, "the provider billed %v, the tenant's budget of $1 charged %v", billed, spent)
}

// Anthropic bills each server-side web search ($10 per 1,000) besides the
// tokens, and reports them in usage.server_tool_use.web_search_requests;
// OpenAI's web_search, file_search and code_interpreter tools are billed
// per call or session the same way. Priced by its tokens alone, a tenant
// with a $1 budget whose requests declare a server tool with a high
// max_uses would pass its Limit by as much as it liked.
//
// The proxy refuses a request declaring one where a budget applies
// (server_tool_not_metered), unless tool_prices has its fee: then the
// budget reserves max_uses searches, and their results as input, and
// charges what the answer counts.
func TestServerToolFeesAreChargedToATenantsBudget(t *testing.T) {
	var bills bill
	price := testPrices["claude-sonnet-4-5"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var searches int64
		if strings.Contains(string(body), "web_search_20250305") {
			searches = 20
			if strings.Contains(string(body), `"max_uses":3`) {
				searches = 3
			}
		}
		// Each search returns 5,000 tokens, billed again at each later search.
		input := 105 + 5000*searches*(searches+1)/2
		bills.add(price.Cost(httpguard.Usage{InputTokens: input, OutputTokens: 64}) + httpguard.Money(searches)*httpguard.Cent)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn",`+
			`"usage":{"input_tokens":%d,"output_tokens":64,"server_tool_use":{"web_search_requests":%d}}}`, input, searches)
	}))
	t.Cleanup(up.Close)
	// startTenant starts a proxy for a tenant with a $1 budget, and the
	// given fees per call.
	startTenant := func(fees map[string]httpguard.Money) *running {
		return start(t, Config{Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
			Getenv: realKeys, Prices: testPrices, ToolPrices: fees,
			Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	}
	r := startTenant(nil)
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":20}],` +
		`"messages":[{"role":"user","content":"search the web for it"}]}`
	for range 10 {
		resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
		if resp.StatusCode != http.StatusOK {
			t.Logf("refused: %d %s", resp.StatusCode, out)
			break
		}
	}
	resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	typ, code, msg := errorOf(t, out)
	assert.Equal(t, "invalid_request_error", typ, "Anthropic's error shape")
	assert.Equal(t, "server_tool_not_metered", code)
	assert.Contains(t, msg, `"web_search_20250305"`, "the message names the tool")
	client := strings.Replace(body, `"type":"web_search_20250305","name":"web_search","max_uses":20`, `"type":"custom","name":"lookup","input_schema":{"type":"object"}`, 1)
	resp, out = r.post(t, "/v1/messages", client, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a tool the client runs is billed in tokens: %s", out)
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.LessOrEqual(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
	assert.LessOrEqual(t, billed, httpguard.Dollar, "the provider billed %v against a $1 budget", billed)

	// With the fee of a search, each request reserves its 3 searches
	// ($0.03), 6 × 10,000 tokens of their results and 3 × 1,246 of the
	// prompt and output the samplings after them read again ($0.19), and is
	// charged what the answer counts ($0.03 and 30,105 input tokens, $0.12
	// in all): seven fit in $1, the eighth's reservation not in what is left.
	bills = bill{}
	r = startTenant(map[string]httpguard.Money{"web_search": httpguard.Cent})
	body = strings.Replace(body, `"max_uses":20`, `"max_uses":3`, 1)
	served := 0
	for range 10 {
		resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
		if resp.StatusCode == http.StatusOK {
			served++
			continue
		}
		_, code, msg := errorOf(t, out)
		assert.Equal(t, "budget_exceeded:chat", code)
		assert.Contains(t, msg, "and 63738 input tokens for what the calls of server tools return to the model", "the message names the results reserved")
	}
	assert.Equal(t, 7, served)
	billed, spent = bills.get(), r.tenants[0].budget.Spent()
	assert.Equal(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
	assert.LessOrEqual(t, billed, httpguard.Dollar)
}

// tool_call_reserve and tool_result_reserve reach the budgets: a search
// without max_uses reserves 2 calls ($0.02) and, for their results, 1,000
// tokens a call counted again after the second, and the prompt and output
// the samplings after them read again.
func TestToolReservesReachATenantsBudget(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the budget refuses every request: none reaches the upstream")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv: realKeys, Prices: testPrices, ToolPrices: map[string]httpguard.Money{"web_search": httpguard.Cent},
		ToolCallReserve: 2, ToolResultReserve: 1000,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Cent}}}})
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"tools":[{"type":"web_search_20250305","name":"web_search"}],` +
		`"messages":[{"role":"user","content":"search the web for it"}]}`
	resp, out := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, string(out))
	_, _, msg := errorOf(t, out)
	assert.Contains(t, msg, "$0.02 for the calls of server tools")
	m := regexp.MustCompile(`(\d+) prompt tokens at most and 1 × 64 output tokens.* and (\d+) input tokens for what the calls`).FindStringSubmatch(msg)
	require.NotNil(t, m, msg)
	prompt, _ := strconv.ParseInt(m[1], 10, 64)
	results, _ := strconv.ParseInt(m[2], 10, 64)
	assert.Equal(t, 1000*(2+1)+2*(prompt+64), results)
}

// The Budget asks an OpenAI-style stream for its usage (include_usage)
// only when the request has no Anthropic-Version header, as Anthropic's
// messages report usage anyway. Through the proxy, a tenant adds that
// header to an OpenAI chat stream without max_tokens: no usage comes, the
// stream is charged its reservation (4,096 output tokens), and a long
// answer is billed far past it, never "charged in full" as the README
// promises. On an OpenAI route the header means nothing to the upstream:
// the proxy drops it.
func TestAnAnthropicVersionHeaderDoesNotHideAnOpenAIStreamsUsage(t *testing.T) {
	var bills bill
	price := testPrices["deepseek-v3.2"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		usage := httpguard.Usage{InputTokens: 9, OutputTokens: 20_000}
		bills.add(price.Cost(usage))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"a long answer"}}]}`+"\n\n")
		if strings.Contains(string(body), `"include_usage":true`) {
			fmt.Fprintf(w, `data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`+"\n\n", usage.InputTokens, usage.OutputTokens)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	resp, out := r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"write a book"}]}`,
		"Authorization", "Bearer vk-chat", "Anthropic-Version", "2023-06-01")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	resp, out = r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"write a book"}]}`,
		"Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.Equal(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
}

// The path check's error says a path must not hold empty segments, but a
// trailing slash (an empty last segment) passed: /v1/chat/completions/ is
// not a completions path to the Budget, which then asks no stream for its
// usage, nor to the Breaker's stream check, while an upstream that
// ignores trailing slashes (Express's default routing) runs it as chat
// completions. A stream without max_tokens was charged its reservation
// and billed far past it.
func TestATrailingSlashDoesNotHideAStreamsUsage(t *testing.T) {
	var bills bill
	price := testPrices["deepseek-v3.2"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.TrimSuffix(r.URL.Path, "/") != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		usage := httpguard.Usage{InputTokens: 9, OutputTokens: 20_000}
		bills.add(price.Cost(usage))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"a long answer"}}]}`+"\n\n")
		if strings.Contains(string(body), `"include_usage":true`) {
			fmt.Fprintf(w, `data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`+"\n\n", usage.InputTokens, usage.OutputTokens)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	resp, out := r.post(t, "/v1/chat/completions/", `{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"write a book"}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.Equal(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
}

// The stack knows endpoints by their path in its documented case: the
// Budget asks only /completions streams for their usage, the proxy
// refuses Realtime by its "realtime" segment. Upstreams whose routing
// ignores case (Express's and Fiber's defaults, as in LocalAI) run
// /v1/chat/COMPLETIONS as chat completions, so a stream without
// max_tokens was charged its reservation and billed far past it.
func TestAnEndpointSpelledInAnotherCaseIsRefused(t *testing.T) {
	var bills bill
	price := testPrices["deepseek-v3.2"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.EqualFold(r.URL.Path, "/v1/chat/completions") {
			http.NotFound(w, r)
			return
		}
		usage := httpguard.Usage{InputTokens: 9, OutputTokens: 20_000}
		bills.add(price.Cost(usage))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"a long answer"}}]}`+"\n\n")
		if strings.Contains(string(body), `"include_usage":true`) {
			fmt.Fprintf(w, `data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`+"\n\n", usage.InputTokens, usage.OutputTokens)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	for _, path := range []string{"/v1/chat/COMPLETIONS", "/v1/Realtime/client_secrets"} {
		resp, out := r.post(t, path, `{"model":"deepseek-v3.2","stream":true,"messages":[{"role":"user","content":"write a book"}]}`,
			"Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", path, out)
	}
	resp := r.get(t, "/v1/files/file-AbC/content", "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "an ID in mixed case is fine, and reaches the upstream")
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.Equal(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
}

// The README once offered narrow prefixes (/v1/chat/completions,
// /v1/messages) as the remedy for tenants reading each other's data in
// the shared account. A prefix serves its path and everything below it,
// so those prefixes still serve stored completions and their messages,
// and Anthropic's batches and their results: the README now says so, and
// that only separate upstream accounts isolate stored data. What a narrow
// prefix does promise is kept: every other endpoint (files here) is
// refused unsent, and the virtual key never reaches the upstream.
func TestAPrefixServesStoredDataBelowItAsTheREADMESays(t *testing.T) {
	var mu sync.Mutex
	var reached, keys []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Method+" "+r.URL.Path)
		keys = append(keys, r.Header.Get("Authorization")+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		io.WriteString(w, `{"object":"list","data":[{"id":"chatcmpl-of-another-tenant"}]}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Getenv: realKeys, Upstreams: []Upstream{
		{Prefix: "/v1/chat/completions", URL: mustURL(t, up.URL+"/v1/chat/completions"), KeyEnv: "OPENAI_KEY"},
		{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	get := func(path string) int {
		req, err := http.NewRequest(http.MethodGet, r.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer vk-chat")
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	stored := []string{"/v1/chat/completions", "/v1/chat/completions/chatcmpl-1/messages", "/v1/messages/batches", "/v1/messages/batches/msgbatch_1/results"}
	for _, path := range stored {
		assert.Equal(t, http.StatusOK, get(path), "%s: the README says a prefix serves the stored data below it", path)
	}
	assert.Equal(t, http.StatusNotFound, get("/v1/files"), "a path outside every prefix is not served")
	mu.Lock()
	defer mu.Unlock()
	want := make([]string, len(stored))
	for i, path := range stored {
		want[i] = "GET " + path
	}
	assert.Equal(t, want, reached, "the files list never reached the upstream")
	assert.Equal(t, []string{"Bearer sk-real-openai", "Bearer sk-real-openai", "sk-ant-real", "sk-ant-real"}, keys, "the upstream's real key, never the tenant's")
}

// Where a budget applies, a tool the provider runs and bills per call
// passes only with a fee in tool_prices; functions and the tools that cost
// tokens only pass without one (see httpguard.BudgetConfig.ToolPrices).
func TestServerToolsWithoutAFeeAreRefused(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}`)
	}))
	t.Cleanup(up.Close)
	r := startBudgetedTenant(t, up.URL)
	for tools, refused := range map[string]string{
		`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]`:            "web_search_20250305",
		`"tools":[{"type":"code_execution_20250825","name":"code_execution"}]`:                 "code_execution_20250825",
		`"tools":[{"type":"web_search_preview"}]`:                                              "web_search_preview",
		`"tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]`:                         "file_search",
		`"tools":[{"type":"code_interpreter","container":{"type":"auto"}}]`:                    "code_interpreter",
		`"tools":[{"type":"shell","environment":{"type":"container_auto"}}]`:                   "shell",
		`"tools":[{"type":"shell"},{"type":"shell","environment":{"type":"local"}}]`:           "",
		`"tools":[{"type":"image_generation"}]`:                                                "image_generation",
		`"tools":[{"type":"function","type":"web_search"}]`:                                    "web_search",
		`"tools":[{"type":"function","TYPE":"Web_Search"}]`:                                    "web_search",
		`"web_search_options":{}`:                                                              "web_search",
		`"tools":[{"name":"f","input_schema":{}},{"type":"web_fetch_20250910","name":"x"}]`:    "",
		`"tools":[{"type":"computer_use_preview"},{"type":"mcp","server_url":"https://x"}]`:    "",
		`"tools":[{"type":"function","function":{"name":"web_search"}}]`:                       "",
		`"tools":[{"type":"custom","name":"x"},{"name":"y","input_schema":{"type":"object"}}]`: "",
		`"tools":[{"type":"bash_20250124","name":"bash"},{"type":"text_editor_20250728"}]`:     "",
		`"tools":[{"type":"computer_20250124"},{"type":"memory_20250818"}]`:                    "",
		`"tools":null,"web_search_options":null`:                                               "",
		`"metadata":{"tools":[{"type":"web_search"}]},"user":"\"type\":\"web_search\""`:        "",
	} {
		body := `{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"hi"}],` + tools + `}`
		resp, out := r.post(t, "/v1/chat/completions", body, "Authorization", "Bearer vk-chat")
		if refused == "" {
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", tools, out)
			continue
		}
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, tools)
		_, code, msg := errorOf(t, out)
		assert.Equal(t, "server_tool_not_metered", code, tools)
		assert.Contains(t, msg, `"`+refused+`"`, "%s: the message names the tool", tools)
		assert.Contains(t, msg, "tool_prices", tools)
		assert.NotContains(t, msg, "BudgetConfig", "%s: advice to a library user, not to this client", tools)
	}
}

// mustReadRequest reads body's facts, failing t on an error.
func mustReadRequest(t *testing.T, body string) requestFacts {
	t.Helper()
	f, err := readRequest([]byte(body))
	require.NoError(t, err, body)
	return f
}

// startBudgetedTenant starts a proxy with one OpenAI upstream at upURL
// (its /v1) and one tenant, "chat" (key vk-chat), with a $1 budget.
func startBudgetedTenant(t *testing.T, upURL string) *running {
	t.Helper()
	return start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, upURL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Prices: testPrices, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
}

// bill is what an upstream billed, added to from its handlers.
type bill struct {
	mu    sync.Mutex
	total httpguard.Money
}

func (b *bill) add(m httpguard.Money) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += m
}

func (b *bill) get() httpguard.Money {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
