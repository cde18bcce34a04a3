package httpguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/holysheep/httpguard"
)

// A client that retries transient failures with the HolySheep reference
// policy: 5 retries, 1s·2^n waits capped at 60s, ±500ms jitter.
func ExampleNewRetrier() {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After-Ms", "10")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"choices":[]}`)
	}))
	defer api.Close()

	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = 10*time.Millisecond, 0 // quick for the example
	policy.OnRetry = func(e httpguard.RetryEvent) {
		fmt.Printf("attempt %d got %d, retrying\n", e.Attempt, e.StatusCode)
	}
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: httpguard.Chain(nil, retrier)}
	defer client.CloseIdleConnections()

	resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", nil)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.StatusCode, calls.Load(), "calls")
	// Output:
	// attempt 1 got 429, retrying
	// 200 2 calls
}

// Any middleware written as func(http.RoundTripper) http.RoundTripper
// composes with the layers through LayerFunc; one whose constructor takes
// options, such as otelhttp.NewTransport, through a closure that calls it.
func ExampleChain() {
	logging := httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			fmt.Println("sending", r.Method, r.URL.Path)
			return next.RoundTrip(r)
		})
	})
	retrier, _ := httpguard.NewRetrier(httpguard.DefaultRetryPolicy())

	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	client := &http.Client{Transport: httpguard.Chain(nil, retrier, logging)}
	defer client.CloseIdleConnections()
	resp, err := client.Get(api.URL + "/v1/models")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	// Output: sending GET /v1/models
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ExampleNewBudget caps spending at a tenth of a cent and shows how a
// refused request looks to the caller.
func ExampleNewBudget() {
	// A stand-in for the provider: every answer reports 1,000 prompt and
	// 500 completion tokens.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	defer api.Close()

	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`))
	if err != nil {
		panic(err)
	}
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
		Limit:  httpguard.Dollars(0.001),
		Period: httpguard.Daily,
		Prices: prices,
	})
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, budget)}

	body := `{"model":"deepseek-v3.2","max_tokens":500,"messages":[{"role":"user","content":"Hello"}]}`
	for i := 1; ; i++ {
		resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		var refused *httpguard.BudgetError // wraps httpguard.ErrBudgetExceeded
		if errors.As(err, &refused) {
			fmt.Printf("request %d refused, nothing sent: it needs %v at worst, %v remains; spent %v\n",
				i, refused.Need, refused.Remaining, budget.Spent())
			break
		}
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // settles the reservation to the reported usage
	}
	// Output:
	// request 3 refused, nothing sent: it needs $0.00023492 at worst, $0.00002 remains; spent $0.00098
}

// ExampleNewLimiter paces calls to an OpenAI-compatible API with
// HolySheep/OpenAI-style limits: 60 requests and 100,000 tokens per minute
// per host and model. A request that could not get its turn within MaxWait fails at
// once, without being sent.
func ExampleNewLimiter() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}`)
	}))
	defer api.Close()

	limiter, err := httpguard.NewLimiter(httpguard.LimitConfig{
		RequestsPerSecond: 1, // 60 per minute
		Burst:             2,
		TokensPerMinute:   100_000,
		MaxWait:           100 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, limiter)}

	body := `{"model":"deepseek-v3.2","max_tokens":500,"messages":[{"role":"user","content":"Hello"}]}`
	for i := 1; i <= 3; i++ {
		resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		var refused *httpguard.LimitError // wraps httpguard.ErrRateLimited
		if errors.As(err, &refused) {
			fmt.Printf("request %d: its turn in the %s bucket is further than MaxWait: not sent\n", i, refused.Reason)
			continue
		}
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // the usage read corrects the token estimate
		fmt.Printf("request %d: %s\n", i, resp.Status)
	}
	// Output:
	// request 1: 200 OK
	// request 2: 200 OK
	// request 3: its turn in the requests bucket is further than MaxWait: not sent
}

// The whole stack, outermost first: the Retrier repeats the attempt that
// failed, the Budget reserves each attempt and charges what the provider
// bills (the 503 nothing, the answer its usage), and the Limiter paces both
// attempts.
func ExampleChain_fullStack() {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	defer api.Close()

	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`))
	if err != nil {
		panic(err)
	}
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollars(1), Prices: prices})
	if err != nil {
		panic(err)
	}
	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = time.Millisecond, 0 // quick for the example
	policy.OnRetry = func(e httpguard.RetryEvent) {
		fmt.Printf("attempt %d got %d, retrying\n", e.Attempt, e.StatusCode)
	}
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		panic(err)
	}
	limiter, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 10, Burst: 2, TokensPerMinute: 100_000})
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, retrier, budget, limiter)}

	body := `{"model":"deepseek-v3.2","max_tokens":500,"messages":[{"role":"user","content":"Hello"}]}`
	resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close() // settles the reservation to the reported usage

	fmt.Println(resp.Status)
	fmt.Println("attempts paced by the limiter:", limiter.Stats().Requests)
	fmt.Println("spent (the 503 is not billed):", budget.Spent())
	// Output:
	// attempt 1 got 503, retrying
	// 200 OK
	// attempts paced by the limiter: 2
	// spent (the 503 is not billed): $0.00049
}

// go-retryablehttp's retry and backoff policies plug into a RetryPolicy as
// they are. They know nothing of AI APIs (quota 429s, x-should-retry), which
// DefaultClassifier does.
func ExampleRetryPolicy_retryablehttp() {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer api.Close()

	policy := httpguard.DefaultRetryPolicy()
	policy.Classify = retryablehttp.DefaultRetryPolicy // a CheckRetry
	policy.Backoff = retryablehttp.LinearJitterBackoff // a Backoff
	policy.BaseDelay, policy.MaxDelay = time.Millisecond, time.Millisecond
	policy.OnRetry = func(e httpguard.RetryEvent) {
		fmt.Printf("attempt %d got %d, retrying in %v\n", e.Attempt, e.StatusCode, e.Delay)
	}
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: httpguard.Chain(nil, retrier)}
	defer client.CloseIdleConnections()

	resp, err := client.Get(api.URL + "/v1/models")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, "after", calls.Load(), "attempts")
	// Output:
	// attempt 1 got 502, retrying in 1ms
	// attempt 2 got 502, retrying in 2ms
	// 200 OK after 3 attempts
}

// DefaultClassifier tells a rate limit, worth retrying, from a spent quota,
// which no retry can fix; a caller can still read the whole body.
func ExampleDefaultClassifier() {
	ctx := context.Background()
	for _, a := range []struct {
		status int
		body   string
	}{
		{http.StatusTooManyRequests, `{"error":{"type":"requests","code":"rate_limit_exceeded"}}`},
		{http.StatusTooManyRequests, `{"error":{"type":"insufficient_quota","code":"insufficient_quota"}}`},
		{529, `{"type":"error","error":{"type":"overloaded_error"}}`},
		{http.StatusBadRequest, `{"error":{"type":"invalid_request_error"}}`},
	} {
		resp := &http.Response{StatusCode: a.status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(a.body))}
		retry, reason := httpguard.DefaultClassifier(ctx, resp, nil)
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d retry=%t reason=%v, body intact: %t\n", a.status, retry, reason, string(body) == a.body)
	}
	// Output:
	// 429 retry=true reason=status 429: retryable status, body intact: true
	// 429 retry=false reason=status 429: quota or spend limit reached, body intact: true
	// 529 retry=true reason=status 529: retryable status, body intact: true
	// 400 retry=false reason=<nil>, body intact: true
}

// A layer of your own that refuses requests before sending them marks its
// errors with Refuse: a Retrier above does not retry them and does not
// count them as attempts, and a Budget above releases what it reserved.
func ExampleRefuse() {
	var sent atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
	}))
	defer api.Close()

	errOffHours := errors.New("outside business hours")
	offHours := httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Body != nil {
				r.Body.Close() // a RoundTripper closes the body, also on errors
			}
			return nil, httpguard.Refuse(fmt.Errorf("myapp: %w", errOffHours))
		})
	})
	retrier, err := httpguard.NewRetrier(httpguard.DefaultRetryPolicy())
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: httpguard.Chain(nil, retrier, offHours)}

	_, err = client.Get(api.URL)
	var re *httpguard.RetryError
	fmt.Println(errors.Is(err, errOffHours), httpguard.IsRefusal(err), errors.As(err, &re) && re.Attempts == 0)
	fmt.Println("requests the server saw:", sent.Load())
	// Output:
	// true true true
	// requests the server saw: 0
}

// Requests the Budget is not meant to price, such as audio uploads, pass
// through Exempt unpriced; everything else that cannot be priced is
// refused, unsent.
func ExampleBudgetConfig_exempt() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"text":"hello"}`)
	}))
	defer api.Close()

	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
		Limit:  httpguard.Dollars(1),
		Prices: httpguard.ExamplePrices(),
		Exempt: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/audio/transcriptions") },
	})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: httpguard.Chain(nil, budget)}

	for _, path := range []string{"/v1/audio/transcriptions", "/v1/files"} {
		resp, err := client.Post(api.URL+path, "multipart/form-data; boundary=x", strings.NewReader("--x--"))
		if err != nil {
			fmt.Println(path, "refused:", errors.Is(err, httpguard.ErrUnknownModel))
			continue
		}
		resp.Body.Close()
		fmt.Println(path, resp.Status)
	}
	fmt.Println("spent:", budget.Spent())
	// Output:
	// /v1/audio/transcriptions 200 OK
	// /v1/files refused: true
	// spent: $0.00
}

// Web searches are billed per call besides the tokens: a Budget with their
// fee reserves the searches a request allows (max_uses) and charges those
// the answer counts; a tool without a fee is refused before it is sent.
func ExampleBudgetConfig_toolPrices() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"hi"}],`+
			`"usage":{"input_tokens":1000,"output_tokens":100,"server_tool_use":{"web_search_requests":2}}}`)
	}))
	defer api.Close()

	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{
		Limit:      httpguard.Dollars(1),
		Prices:     httpguard.ExamplePrices(),
		ToolPrices: map[string]httpguard.Money{"web_search": httpguard.Cent}, // $10 per 1,000 searches
	})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: httpguard.Chain(nil, budget)}

	for _, tool := range []string{
		`{"type":"web_search_20250305","name":"web_search","max_uses":3}`,
		`{"type":"code_execution_20250825","name":"code_execution"}`,
	} {
		body := `{"model":"claude-sonnet-4-5","max_tokens":200,"messages":[{"role":"user","content":"news?"}],"tools":[` + tool + `]}`
		resp, err := client.Post(api.URL+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			fmt.Println("refused:", errors.Is(err, httpguard.ErrUnpricedTool))
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.Status)
	}
	// 1,000 input tokens at $3 and 100 output tokens at $15 per million,
	// and two searches at $0.01.
	fmt.Println("spent:", budget.Spent())
	// Output:
	// 200 OK
	// refused: true
	// spent: $0.0245
}

// A Breaker opens a circuit (host and model) after a run of failures, then
// refuses that circuit's requests at once, unsent, for its CoolDown.
func ExampleNewBreaker() {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer api.Close()

	breaker, err := httpguard.NewBreaker(httpguard.BreakerConfig{
		ConsecutiveFailures: 3,
		CoolDown:            time.Minute,
		OnStateChange: func(e httpguard.BreakerEvent) {
			fmt.Printf("circuit %s (%s)\n", e.To, e.Reason) // e.Key is "127.0.0.1:port deepseek-v3.2"
		},
	})
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, breaker)}

	body := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"Hello"}]}`
	for i := 1; i <= 5; i++ {
		resp, err := client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if errors.Is(err, httpguard.ErrCircuitOpen) {
			fmt.Printf("request %d refused, nothing sent\n", i)
			continue
		}
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Printf("request %d: %s\n", i, resp.Status)
	}
	fmt.Println("the provider saw", calls.Load(), "requests")
	// Output:
	// request 1: 503 Service Unavailable
	// request 2: 503 Service Unavailable
	// circuit open (3 consecutive failures)
	// request 3: 503 Service Unavailable
	// request 4 refused, nothing sent
	// request 5 refused, nothing sent
	// the provider saw 3 requests
}

// When the primary gives up (here a 503, with no retries), the Fallback
// sends the request to the next target with that target's URL, key and
// model; the caller's key stays with the primary.
func ExampleNewFallback() {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer primary.Close()
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("second got %s %s with %q\n", r.URL.Path, body, r.Header.Get("Authorization"))
		io.WriteString(w, `{"choices":[{"message":{"content":"Hi"}}]}`)
	}))
	defer second.Close()

	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{
		Targets: []httpguard.Target{
			{Name: "holysheep", BaseURL: primary.URL + "/v1"},
			{Name: "openai", BaseURL: second.URL + "/openai/v1",
				Header: http.Header{"Authorization": {"Bearer sk-openai"}},
				Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}},
		},
		OnSwitch: func(e httpguard.FallbackEvent) {
			fmt.Printf("moving from %s to %s after %d\n", e.From, e.To, e.StatusCode)
		},
	})
	if err != nil {
		panic(err)
	}
	policy := httpguard.DefaultRetryPolicy()
	policy.MaxRetries = 0 // one attempt per target, for the example
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	// Fallback outermost: one Retrier, Breaker and Budget below it cover
	// every target.
	client := &http.Client{Transport: httpguard.Chain(transport, fallback, retrier)}

	req, err := http.NewRequest("POST", primary.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"Hello"}]}`))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer sk-holysheep") // the primary's key stays with the primary
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, "from", resp.Header.Get(httpguard.TargetHeader))
	// Output:
	// moving from holysheep to openai after 503
	// second got /openai/v1/chat/completions {"model":"gpt-4.1-mini","messages":[{"role":"user","content":"Hello"}]} with "Bearer sk-openai"
	// 200 OK from openai
}

// LoadPrices reads a price table from JSON; a model billed more for long
// prompts has its long_context prices, which apply to every token of a
// request whose prompt passes "above" input tokens.
func ExampleLoadPrices() {
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"claude-sonnet-4-5": {"input": 3, "cached_input": 0.3, "output": 15,
		"long_context": {"above": 200000, "input": 6, "cached_input": 0.6, "output": 22.5}}}`))
	if err != nil {
		panic(err)
	}
	sonnet := prices["claude-sonnet-4-5"]
	fmt.Println(sonnet.Cost(httpguard.Usage{InputTokens: 150_000, OutputTokens: 1_000}))
	fmt.Println(sonnet.Cost(httpguard.Usage{InputTokens: 250_000, OutputTokens: 1_000}))
	// Output:
	// $0.465
	// $1.5225
}

// QueryModel reads the model a query string names, which LiteLLM runs
// instead of the body's; a Budget prices a request at the dearer of the
// two.
func ExampleQueryModel() {
	for _, q := range []string{"api-version=2024-10-21", "model=gpt-4o", "mo%64el=gpt-4o-mini", "model=a&model=b"} {
		m, err := httpguard.QueryModel(q)
		fmt.Printf("%q %v\n", m, err)
	}
	// Output:
	// "" <nil>
	// "gpt-4o" <nil>
	// "gpt-4o-mini" <nil>
	// "" httpguard: the query string names the model twice ("a", "b"), which servers read differently
}
