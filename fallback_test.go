package httpguard

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fallbackRig is a Fallback from a primary to a second target, with the
// switches it announced.
type fallbackRig struct {
	f     *Fallback
	mu    sync.Mutex
	moves []FallbackEvent
}

func newFallbackRig(t *testing.T, targets ...Target) *fallbackRig {
	t.Helper()
	r := &fallbackRig{}
	f, err := NewFallback(FallbackConfig{Targets: targets, OnSwitch: func(e FallbackEvent) {
		r.mu.Lock()
		r.moves = append(r.moves, e)
		r.mu.Unlock()
	}})
	require.NoError(t, err)
	r.f = f
	return r
}

func (r *fallbackRig) switches() []FallbackEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]FallbackEvent(nil), r.moves...)
}

// recordLast is a layer that keeps the last request it passes down in
// *seen.
func recordLast(seen **http.Request) Layer {
	return LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			*seen = req
			return next.RoundTrip(req)
		})
	})
}

// secondKey is the second target's key in these tests.
const secondKey = "Bearer sk-second"

// toSecond is a second target at srv, with its key and a model map.
func toSecond(srv *httpguardtest.Server) Target {
	return Target{Name: "second", BaseURL: srv.BaseURL(), Header: http.Header{"Authorization": {secondKey}},
		Models: map[string]string{"m": "small"}}
}

// send posts body to the primary's chat completions with the caller's key.
func sendChat(t *testing.T, c *http.Client, primary *httpguardtest.Server, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", primary.BaseURL()+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-primary")
	req.Header.Set("X-Api-Key", "sk-primary")
	req.Header.Set("X-Trace", "t-1")
	resp, err := c.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestNewFallbackRejectsInvalidConfig(t *testing.T) {
	ok := Target{BaseURL: "https://api.holysheep.ai/v1"}
	for name, tc := range map[string]struct {
		c    FallbackConfig
		want string
	}{
		"no second target": {FallbackConfig{Targets: []Target{ok}}, "Targets must name the primary and at least one other target, got 1"},
		"relative URL":     {FallbackConfig{Targets: []Target{ok, {BaseURL: "/v1"}}}, `Targets[1]: BaseURL must be an http or https URL with a host, got no scheme`},
		"bad URL":          {FallbackConfig{Targets: []Target{ok, {BaseURL: "http://[::1"}}}, "Targets[1]: BaseURL: "},
		"same name":        {FallbackConfig{Targets: []Target{ok, {BaseURL: "https://api.holysheep.ai/other"}}}, `Targets[1]: name "api.holysheep.ai" is taken`},
		"empty model":      {FallbackConfig{Targets: []Target{ok, {BaseURL: "https://x/v1", Models: map[string]string{"a": ""}}}}, `Models maps "a" to ""`},
		"negative buffer":  {FallbackConfig{Targets: []Target{ok, {BaseURL: "https://x/v1"}}, MaxBufferedBody: -1}, "MaxBufferedBody must be >= 0"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFallback(tc.c)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "httpguard: fallback: "), err.Error())
		})
	}
}

func TestFallbackSendsTheRequestToTheNextTargetWithItsURLKeyAndModel(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		io.WriteString(w, `{"choices":[]}`)
	})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()},
		Target{Name: "second", BaseURL: second.URL + "/openai/v1?api-version=2", Header: http.Header{"authorization": {secondKey}},
			Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}})
	var seen *http.Request
	record := recordLast(&seen)
	c := clientFor(t, r.f, record)
	body := `{"messages":[{"role":"user","content":"model \"deepseek-v3.2\" here"}],` + "\n" +
		`  "model" : "deepseek-v3.2", "temperature":0.7000, "max_tokens":16}`

	resp := sendChat(t, c, primary, body)

	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	assert.Equal(t, "/openai/v1/chat/completions", seen.URL.Path)
	assert.Equal(t, "api-version=2", seen.URL.RawQuery)
	assert.Equal(t, strings.TrimPrefix(second.URL, "http://"), seen.Host)
	assert.Equal(t, secondKey, seen.Header.Get("Authorization"))
	assert.Empty(t, seen.Header.Values("X-Api-Key"), "the primary's key goes nowhere else")
	assert.Equal(t, "t-1", seen.Header.Get("X-Trace"))
	assert.Equal(t, []string{strings.Replace(body, `"model" : "deepseek-v3.2"`, `"model" : "gpt-4.1-mini"`, 1)}, second.received(),
		"every other byte of the body is the caller's")
	assert.EqualValues(t, 1, primary.Stats().Requests)
	require.Len(t, r.switches(), 1)
	e := r.switches()[0]
	assert.Equal(t, "primary", e.From)
	assert.Equal(t, "second", e.To)
	assert.Equal(t, http.StatusServiceUnavailable, e.StatusCode)
}

func TestFallbackCarriesTheRequestsQueryAndEscapesButNotItsKey(t *testing.T) {
	seen := movedToSecond(t, "/models/tenant%2Fm:generate?beta=true&key=sk-primary&Api%2DKey=sk-2&x=a%20b")
	assert.Equal(t, "/openai/models/tenant%2Fm:generate", seen.URL.EscapedPath(), "the request's escapes are kept")
	assert.Equal(t, "beta=true&x=a%20b", seen.URL.RawQuery, "the query goes along as written, without the primary's keys")
}

// Some servers split a query at ';' as well as '&' (Ruby's Rack, Go before
// 1.17): a key written after a ';' is a key to them, and stays the
// primary's.
func TestFallbackKeepsAKeyAfterASemicolonFromOtherTargets(t *testing.T) {
	seen := movedToSecond(t, "/chat/completions?beta=true;key=sk-primary;x=1&filter=a;b&y=2;%61pi_key=sk-2&token=sk-3;")
	assert.Equal(t, "beta=true;x=1&filter=a;b&y=2", seen.URL.RawQuery, "every part but the keys, as written")
}

// movedToSecond posts to the path (and query) below a primary's /v1 that
// answers 503, and returns the request its fallback, at /openai, received
// and answered.
func movedToSecond(t *testing.T, pathAndQuery string) *http.Request {
	t.Helper()
	primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{"choices":[]}`) })
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"}, Target{Name: "second", BaseURL: second.URL + "/openai"})
	var seen *http.Request
	c := clientFor(t, r.f, recordLast(&seen))
	req, err := http.NewRequest("POST", primary.URL+"/v1"+pathAndQuery, strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "second", resp.Header.Get(TargetHeader))
	return seen
}

func TestFallbackMovesWhenThePrimaryGivesUp(t *testing.T) {
	for name, fault := range map[string]httpguardtest.Fault{
		"503":           httpguardtest.ServiceUnavailable(),
		"529":           httpguardtest.Overloaded(),
		"rate limit":    httpguardtest.RateLimited(time.Second),
		"billing stop":  httpguardtest.QuotaExceeded(),
		"reset":         httpguardtest.ConnectionReset(),
		"408":           {Status: http.StatusRequestTimeout},
		"502 from body": {Status: http.StatusBadGateway, Body: "<html>bad gateway</html>"},
	} {
		t.Run(name, func(t *testing.T) {
			primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
			require.NoError(t, primary.StartOutage(fault))
			r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
			retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})

			resp := sendChat(t, clientFor(t, r.f, retrier), primary, chatBody("m", 16))

			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "second", resp.Header.Get(TargetHeader))
			assert.EqualValues(t, 1, second.Stats().Requests)
			assert.Len(t, r.switches(), 1)
		})
	}
}

func TestFallbackMovesWhenThePrimarysCircuitIsOpen(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
	c := clientFor(t, r.f, br.b)

	sendChat(t, c, primary, chatBody("m", 16))
	resp := sendChat(t, c, primary, chatBody("m", 16))

	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	assert.EqualValues(t, 1, primary.Stats().Requests, "the second call was refused unsent")
	assert.EqualValues(t, 2, second.Stats().Requests)
	moves := r.switches()
	require.Len(t, moves, 2)
	assert.ErrorIs(t, moves[1].Err, ErrCircuitOpen)
}

func TestFallbackStaysOnAnswersThatAnotherTargetWouldNotChange(t *testing.T) {
	for name, fault := range map[string]httpguardtest.Fault{
		"200": {},
		"400": {Status: http.StatusBadRequest},
		"401": {Status: http.StatusUnauthorized},
		"404": {Status: http.StatusNotFound},
		"501": {Status: http.StatusNotImplemented},
	} {
		t.Run(name, func(t *testing.T) {
			primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
			require.NoError(t, primary.StartOutage(fault))
			r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second))

			resp := sendChat(t, clientFor(t, r.f), primary, chatBody("m", 16))

			assert.Equal(t, max(fault.Status, 200), resp.StatusCode)
			assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
			assert.Zero(t, second.Stats().Requests)
			assert.Empty(t, r.switches())
		})
	}
}

func TestFallbackStaysWhenTheCallerGaveUpOrALayerBelowRefused(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.SlowHeaders(time.Hour)))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", primary.BaseURL()+"/chat/completions", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)
	_, err = clientFor(t, r.f).Do(req)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	budget := newTestBudget(t, BudgetConfig{Limit: 1})
	_, err = clientFor(t, r.f, budget).Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
	assert.ErrorIs(t, err, ErrBudgetExceeded)
	assert.True(t, IsRefusal(err))

	assert.Zero(t, second.Stats().Requests)
	assert.Empty(t, r.switches())
}

// Once the caller has a response, what it reads comes from one target: a
// stream cut after its first bytes is the caller's error, not a switch.
func TestFallbackNeverMovesOnceTheCallerHasTheAnswer(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.CutStream(2)))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
	c := clientFor(t, r.f, retrier, br.b)

	resp := sendChat(t, c, primary, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	got, err := io.ReadAll(resp.Body)

	assert.Error(t, err)
	assert.Contains(t, string(got), "data: {", "the caller read the first events")
	assert.Zero(t, second.Stats().Requests)
	assert.Empty(t, r.switches())
	assert.Equal(t, CircuitOpen, br.stats(t).State, "the breaker counted the cut")
}

// When the next target refuses (nothing sent), the caller gets what the
// last target sent the request answered, body and all.
func TestFallbackReturnsTheLastAnswerSentWhenTheNextTargetRefuses(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.Overloaded()))
	require.NoError(t, second.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second))
	br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
	c := clientFor(t, r.f, br.b)
	_, err := callChat(c, second, "small") // not below the primary: passes through, and opens the second's circuit
	require.NoError(t, err)

	resp := sendChat(t, c, primary, chatBody("m", 16))
	body, err := io.ReadAll(resp.Body)

	require.NoError(t, err)
	assert.Equal(t, 529, resp.StatusCode)
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Contains(t, string(body), "overloaded_error")
	assert.EqualValues(t, len(body), resp.ContentLength)
	assert.EqualValues(t, 1, second.Stats().Requests, "only the call that opened its circuit")
	require.Len(t, r.switches(), 1)

	// Now both circuits are open: nothing is sent at all.
	_, err = clientFor(t, r.f, br.b).Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
	assert.ErrorIs(t, err, ErrCircuitOpen)
	assert.True(t, IsRefusal(err))
	assert.EqualValues(t, 1, primary.Stats().Requests)
}

func TestFallbackPassesRequestsForOtherURLsThrough(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	c := clientFor(t, r.f)

	for _, url := range []string{primary.URL + "/v1x/chat/completions", primary.URL + "/chat/completions"} {
		resp, err := c.Post(url, "application/json", strings.NewReader(chatBody("m", 16)))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Empty(t, resp.Header.Get(TargetHeader), url)
	}
	assert.Zero(t, second.Stats().Requests)
}

func TestFallbackReplaysABodyWithoutGetBody(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	body := &onceReader{Reader: strings.NewReader(chatBody("m", 16))}

	resp, err := clientFor(t, r.f).Post(primary.BaseURL()+"/chat/completions", "application/json", body)

	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, second.Requests(), 1)
	assert.Equal(t, chatBody("small", 16), string(second.Requests()[0].Body))
	assert.True(t, body.closed.Load())
}

func TestFallbackSendsABodyTooLongToKeepToThePrimaryOnly(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.BaseURL()}, toSecond(second)}, MaxBufferedBody: 10})
	require.NoError(t, err)
	body := &onceReader{Reader: strings.NewReader(chatBody("m", 16))}

	resp, err := clientFor(t, f).Post(primary.BaseURL()+"/chat/completions", "application/json", body)

	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, chatBody("m", 16), string(primary.Requests()[0].Body), "sent whole")
	assert.Zero(t, second.Stats().Requests)
}

func TestFallbackSetsThePrimarysOwnHeaderAndModel(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL(), Header: http.Header{"X-Team": {"a"}}, Models: map[string]string{"m": "big"}},
		toSecond(second))

	resp := sendChat(t, clientFor(t, r.f), primary, chatBody("m", 16))

	assert.Equal(t, http.StatusOK, resp.StatusCode)
	got := primary.Requests()[0]
	assert.Equal(t, chatBody("big", 16), string(got.Body))
	assert.Equal(t, "a", got.Header.Get("X-Team"))
	assert.Equal(t, "Bearer sk-primary", got.Header.Get("Authorization"), "the caller's key is the primary's")
}

func TestFallbackLeavesTheCallersRequestAsItWas(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	r := newFallbackRig(t, Target{BaseURL: primary.BaseURL()}, toSecond(second))
	body := &onceReader{Reader: strings.NewReader(chatBody("m", 16))}
	req, err := http.NewRequest("POST", primary.BaseURL()+"/chat/completions", body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-primary")
	url, header := req.URL.String(), req.Header.Clone()

	resp, err := r.f.Wrap(nil).RoundTrip(req)

	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
	assert.Equal(t, url, req.URL.String())
	assert.Equal(t, header, req.Header)
	assert.True(t, body.closed.Load())
}

func TestFallbackLogsSwitchesWithoutSecrets(t *testing.T) {
	primary, second := newFaultServer(t, httpguardtest.Config{}), newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	var logs bytes.Buffer
	f, err := NewFallback(FallbackConfig{Targets: []Target{{Name: "primary", BaseURL: primary.BaseURL()}, toSecond(second)},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	req, err := http.NewRequest("POST", primary.BaseURL()+"/chat/completions?key=sk-query-secret", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-primary-secret")

	resp, err := clientFor(t, f).Do(req)

	require.NoError(t, err)
	resp.Body.Close()
	assert.Contains(t, logs.String(), `level=INFO msg="httpguard: fallback: moving to the next target"`)
	assert.Contains(t, logs.String(), "from=primary to=second status=503")
	assert.NotContains(t, logs.String(), "secret")
	assert.NotContains(t, logs.String(), "sk-")
}

func TestFallbackRefusesARequestWithoutURL(t *testing.T) {
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: "http://a/v1"}, {BaseURL: "http://b/v1"}}})
	require.NoError(t, err)
	_, err = f.Wrap(nil).RoundTrip(&http.Request{Method: "GET"})
	assert.True(t, IsRefusal(err))
	assert.Equal(t, "httpguard: fallback: request has no URL", err.Error())
}

// The primary's keys go to no other target, whatever a provider or the
// gateway in front of it calls them: Azure API Management's
// Ocp-Apim-Subscription-Key (and ?subscription-key=), a Cloudflare AI
// Gateway's cf-aig-authorization, Helicone's Helicone-Auth.
func TestFallbackKeepsEveryPrimaryCredentialFromOtherTargets(t *testing.T) {
	primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{"choices":[]}`) })
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"},
		Target{Name: "second", BaseURL: second.URL + "/v1", Header: http.Header{"Authorization": {secondKey}}})
	var seen *http.Request
	c := clientFor(t, r.f, recordLast(&seen))
	req, err := http.NewRequest("POST", primary.URL+"/v1/chat/completions?subscription-key=sk-primary-q&X-Amz-Credential=AKIAPRIMARY&beta=true", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	req.Header.Set("X-Trace", "t-1")
	secrets := map[string]string{
		"Ocp-Apim-Subscription-Key": "sk-primary-apim",
		"Cf-Aig-Authorization":      "Bearer sk-primary-cf",
		"Helicone-Auth":             "Bearer sk-primary-helicone",
		"X-Goog-Credentials":        "primary-credentials",
		// The OpenAI SDKs send these from OPENAI_ORG_ID and
		// OPENAI_PROJECT_ID; OpenAI refuses another account's key with
		// them (401 mismatched_organization).
		"Openai-Organization": "org-primary",
		"Openai-Project":      "proj_primary",
	}
	for k, v := range secrets {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()

	require.Equal(t, "second", resp.Header.Get(TargetHeader))
	for k := range secrets {
		assert.Empty(t, seen.Header.Values(k), "the primary's %s went to the second target", k)
	}
	assert.Equal(t, "beta=true", seen.URL.RawQuery, "the primary's query key stays; the rest goes along")
	assert.Equal(t, secondKey, seen.Header.Get("Authorization"))
	assert.Equal(t, "t-1", seen.Header.Get("X-Trace"), "headers that carry no key go along")
}

// A BaseURL may carry a key (in its query or user info, which the
// Fallback supports), or be a key pasted in the wrong field; an error
// about a BaseURL that does not parse, or is no http or https URL, must
// not repeat it, as errors end up in logs.
func TestNewFallbackKeepsTheKeyOfABaseURLThatDoesNotParseOutOfItsError(t *testing.T) {
	primary := Target{BaseURL: "https://api.holysheep.ai/v1"}
	for name, base := range map[string]string{
		"a stray newline after a key in the query": "https://example.openai.azure.com/openai?api-key=sk-secret-1\n",
		"a bad escape in user info":                "https://user:sk-secret-1%zz@api.example.com/v1",
		"a key pasted in place of the URL":         "sk-secret-1",
		"a key pasted after a scheme":              "https:sk-secret-1",
		"a key with a colon":                       "sk-secret-1:xyz",
		"a key as a host":                          "//sk-secret-1",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFallback(FallbackConfig{Targets: []Target{primary, {Name: "second", BaseURL: base}}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "Targets[1]: BaseURL")
			assert.NotContains(t, err.Error(), "sk-secret-1")
		})
	}
}

// Some failures belong to the primary's host, not to the request: its name
// no longer resolves, or its certificate is not trusted. Asking the same
// host again cannot help, so the Retrier does not; another target can.
func TestFallbackMovesWhenThePrimarysHostCannotBeReached(t *testing.T) {
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{"choices":[]}`) })
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"choices":[]}`)
	}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes our client breaks off
	untrusted.StartTLS()
	t.Cleanup(untrusted.Close)
	for name, primaryURL := range map[string]string{
		"its name does not resolve":      "http://api.primary.invalid/v1",
		"its certificate is not trusted": untrusted.URL + "/v1",
	} {
		t.Run(name, func(t *testing.T) {
			r := newFallbackRig(t, Target{Name: "primary", BaseURL: primaryURL},
				Target{Name: "second", BaseURL: second.URL + "/v1", Header: http.Header{"Authorization": {secondKey}}})
			retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
			dialer := &net.Dialer{}
			base := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if host, _, _ := net.SplitHostPort(addr); host == "api.primary.invalid" {
					return nil, &net.OpError{Op: "dial", Net: network,
						Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
				}
				return dialer.DialContext(ctx, network, addr)
			}}
			t.Cleanup(base.CloseIdleConnections)
			c := &http.Client{Transport: Chain(base, r.f, retrier)}
			req, err := http.NewRequest("POST", primaryURL+"/chat/completions", strings.NewReader(chatBody("m", 16)))
			require.NoError(t, err)

			resp, err := c.Do(req)

			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "second", resp.Header.Get(TargetHeader))
			assert.Len(t, r.switches(), 1)
		})
	}
}

// refusingURL is the base URL of a loopback port nothing listens on: every
// connection to it is refused.
func refusingURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr + "/v1"
}

// A later target that never received the request (its connections
// refused, every retry of it) has nothing to say: the caller gets the
// answer the earlier target gave, with what it says to do (Retry-After),
// rather than "connection refused".
func TestFallbackReturnsTheEarlierAnswerWhenTheNextTargetCannotBeReached(t *testing.T) {
	const answer = `{"error":{"message":"slow down","type":"rate_limit_exceeded"}}`
	primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, answer)
	})
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"},
		Target{Name: "second", BaseURL: refusingURL(t), Header: http.Header{"Authorization": {secondKey}}})
	retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	c := clientFor(t, r.f, retrier)
	req, err := http.NewRequest("POST", primary.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)

	resp, err := c.Do(req)

	require.NoError(t, err, "the primary's answer, not the second's refused connections")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "20", resp.Header.Get("Retry-After"))
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Equal(t, answer, string(body))
	assert.EqualValues(t, 3, primary.hits.Load(), "the Retrier retried the primary and gave up")
	moves := r.switches()
	require.Len(t, moves, 1)
	assert.Equal(t, http.StatusTooManyRequests, moves[0].StatusCode)
}

// An earlier answer whose body is longer than the Fallback keeps, or that
// stalls, still reaches the caller with its status and headers; reading
// its body gives what was kept, then an error that says it was cut.
func TestFallbackReturnsAnEarlierAnswerTooLongToKeepCutWithAnError(t *testing.T) {
	long := strings.Repeat("x", maxKeptBody+1000)
	primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, long)
	})
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"},
		Target{Name: "second", BaseURL: refusingURL(t)})

	resp, err := clientFor(t, r.f).Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))

	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, ErrKeptBodyCut)
	assert.Equal(t, long[:maxKeptBody], string(body))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "20", resp.Header.Get("Retry-After"))
	assert.EqualValues(t, -1, resp.ContentLength)
}

// A later target that did receive the request has the last word, even when
// a retry of it then could not connect: the documented rule.
func TestFallbackReturnsTheLastTargetsErrorWhenItReceivedTheRequest(t *testing.T) {
	primary := newServer(t, failFirst(100, http.StatusTooManyRequests, map[string]string{"Retry-After": "20"}))
	var second *server
	second = newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		second.Listener.Close() // the retry finds nothing listening
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"},
		Target{Name: "second", BaseURL: second.URL + "/v1"})
	retrier, _ := newTestRetrier(t, RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})

	_, err := clientFor(t, r.f, retrier).Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))

	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 2, re.Attempts)
	assert.EqualValues(t, 1, second.hits.Load())
}
