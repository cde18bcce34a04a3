package httpguard

// A fallback target that answers a redirect (3xx). The Fallback hands the
// target's answer to the caller's http.Client as the primary's; a client
// that follows its Location does so with the caller's own headers
// (http.Client strips only Authorization, Cookie and the like on a
// cross-domain redirect, not X-Api-Key, Api-Key, OpenAI-Organization...)
// and a Referer holding the primary's URL and its query, and reports a
// failed redirect with the URL of the response's Request. So such an
// answer comes without its Location, and with the caller's request.

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fallbackHosts is a base transport that dials "primary.test" and
// "target.test" at the loopback servers primary and target, so that the
// hosts differ as two providers' do (http.Client strips Authorization
// between domains).
func fallbackHosts(t *testing.T, primary, target *httptest.Server) *http.Transport {
	addrs := map[string]string{"primary.test": primary.Listener.Addr().String(), "target.test": target.Listener.Addr().String()}
	d := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if a, ok := addrs[host]; ok {
			addr = a
		}
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// answeredBy fails t unless the call got resp from the target named
// target; it reads resp's body to its end and closes it.
func answeredBy(t *testing.T, resp *http.Response, err error, target string) {
	t.Helper()
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, target, resp.Header.Get(TargetHeader))
}

// answerChat answers a chat completion with its usage.
func answerChat(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"id":"c","object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
}

// seenRequests records what a server received: each request's URL and
// headers, flattened into one string.
type seenRequests struct {
	mu  sync.Mutex
	all []string
}

func (s *seenRequests) add(r *http.Request) {
	var b strings.Builder
	b.WriteString(r.Method + " " + r.URL.String() + "\n")
	for k, vs := range r.Header {
		b.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
	}
	body, _ := io.ReadAll(r.Body)
	b.Write(body)
	s.mu.Lock()
	s.all = append(s.all, b.String())
	s.mu.Unlock()
}

func (s *seenRequests) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.all...)
}

// holdsNone fails t unless the server received a request, and none of
// them holds any of secrets.
func (s *seenRequests) holdsNone(t *testing.T, secrets ...string) {
	t.Helper()
	got := s.get()
	require.NotEmpty(t, got)
	for i, r := range got {
		for _, secret := range secrets {
			assert.NotContains(t, r, secret, "request %d the fallback target received:\n%s", i, r)
		}
	}
}

// The primary is down (503); the fallback target answers the request it
// was sent with a 307 to an absolute URL on its own host (as a Starlette
// server's redirect_slashes, or an http-to-https upgrade, does). The
// caller's http.Client follows the redirect with the caller's headers and
// a Referer: the primary's X-Api-Key and its ?key= reach the fallback
// target, which the Fallback promises never happens. The caller gets the
// 307, without its Location.
func TestFallbackTargetsRedirectDoesNotCarryThePrimarysKeysToIt(t *testing.T) {
	const primaryKey, primaryQueryKey, targetKey = "sk-ant-PRIMARY-header-secret", "PRIMARY-query-secret", "sk-ant-target"
	primary := overloadedServer(t)
	var seen seenRequests
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		if r.URL.Path == "/v1/messages" {
			w.Header().Set("Location", "http://target.test/v1/messages/")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"message","model":"claude-x","usage":{"input_tokens":1,"output_tokens":1}}`)
	}))
	defer target.Close()

	base := fallbackHosts(t, primary, target)
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: "http://primary.test/v1"},
		{Name: "second", BaseURL: "http://target.test/v1", Header: http.Header{"X-Api-Key": {targetKey}}},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(base, fb)} // the default redirect policy, as SDKs use

	req, err := http.NewRequest(http.MethodPost, "http://primary.test/v1/messages?key="+primaryQueryKey,
		strings.NewReader(`{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	req.Header.Set("X-Api-Key", primaryKey)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Location"))

	seen.holdsNone(t, primaryKey, primaryQueryKey)
}

// A fallback target whose key is in its BaseURL's query (as Gemini's
// ?key=) answers a redirect whose Location http.Client cannot parse: the
// client reported it with the URL of the response's Request, the request
// the Fallback sent the target, query and key included, so the target's
// key ended up in the caller's error, and its logs.
func TestFallbackTargetsQueryKeyDoesNotReachTheCallersErrorThroughARedirect(t *testing.T) {
	const targetKey = "TARGET-query-secret-0123456789"
	primary := overloadedServer(t)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", "/v1beta/%zz")
		w.WriteHeader(http.StatusFound)
	}))
	defer target.Close()

	base := fallbackHosts(t, primary, target)
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: "http://primary.test/v1beta"},
		{Name: "second", BaseURL: "http://target.test/v1beta?key=" + targetKey},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(base, fb)}
	resp, err := client.Post("http://primary.test/v1beta/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		assert.NotContains(t, err.Error(), targetKey, "the caller's error holds the fallback target's key")
		return
	}
	resp.Body.Close()
	assert.Equal(t, http.StatusFound, resp.StatusCode, "the redirect reaches the caller unfollowed")
	assert.NotContains(t, resp.Request.URL.String(), targetKey)
}

// The WebSocket subprotocol list carries a key under a name the
// credential matcher does not see: OpenAI's Realtime API takes it as
// "openai-insecure-api-key.KEY", Deepgram as "token, KEY", and a Go
// WebSocket client such as coder/websocket sends the handshake through the
// caller's http.Client. The primary answers the handshake 503; the
// Fallback sent it on to the next target with the primary's key: the
// header is a credential's.
func TestFallbackDoesNotSendAKeyInTheWebSocketSubprotocolToTheNextTarget(t *testing.T) {
	const realtimeKey = "sk-PRIMARY-in-subprotocol"
	primary := overloadedServer(t)
	var seen seenRequests
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		http.Error(w, `{"error":"no"}`, http.StatusBadRequest)
	}))
	defer target.Close()
	base := fallbackHosts(t, primary, target)
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: "http://primary.test/v1"},
		{Name: "second", BaseURL: "http://target.test/v1", Header: http.Header{"Authorization": {"Bearer sk-second"}}},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(base, fb)}

	req, err := http.NewRequest(http.MethodGet, "http://primary.test/v1/realtime?model=gpt-realtime", nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key."+realtimeKey+", openai-beta.realtime-v1")
	resp, err := client.Do(req)
	answeredBy(t, resp, err, "second")

	seen.holdsNone(t, realtimeKey)
}

// The root of the error above, without a redirect: every answer a fallback
// target gave reached the caller with resp.Request the request the
// Fallback sent that target, its key in the URL's query and in its
// headers. Callers log resp.Request.URL (and http.Client puts it in
// errors). The caller's own request is the answer's Request now.
func TestFallbackAnswerDoesNotHandTheCallerTheTargetsKeys(t *testing.T) {
	const queryKey, headerKey = "TARGET-query-secret-0123456789", "Bearer sk-TARGET-header-secret"
	primary := overloadedServer(t)
	target := httptest.NewServer(http.HandlerFunc(answerChat))
	defer target.Close()
	base := fallbackHosts(t, primary, target)
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: "http://primary.test/v1beta"},
		{Name: "second", BaseURL: "http://target.test/v1beta?key=" + queryKey, Header: http.Header{"Authorization": {headerKey}}},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(base, fb)}
	resp, err := client.Post("http://primary.test/v1beta/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	answeredBy(t, resp, err, "second")
	require.NotNil(t, resp.Request)
	assert.NotContains(t, resp.Request.URL.String(), queryKey, "resp.Request.URL holds the target's key")
	assert.NotEqual(t, headerKey, resp.Request.Header.Get("Authorization"), "resp.Request's headers hold the target's key")
}

// overloadedServer is a primary that answers every request 503.
func overloadedServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The primary redirects (as a trailing-slash redirect does), then fails:
// http.Client follows the redirect with a Referer naming the URL it came
// from, the primary's ?key= included, and the Fallback sent it on to the
// next target. Referer is a credential header now.
func TestFallbackDoesNotSendThePrimarysRefererToTheNextTarget(t *testing.T) {
	const primaryQueryKey = "PRIMARY-query-secret"
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.HasSuffix(r.URL.Path, "/") {
			http.Redirect(w, r, r.URL.Path+"/?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
			return
		}
		http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
	}))
	defer primary.Close()
	var seen seenRequests
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		answerChat(w, r)
	}))
	defer target.Close()
	base := fallbackHosts(t, primary, target)
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: "http://primary.test/v1"},
		{Name: "second", BaseURL: "http://target.test/v1"},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(base, fb)}
	resp, err := client.Post("http://primary.test/v1/chat/completions?key="+primaryQueryKey, "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	answeredBy(t, resp, err, "second")
	seen.holdsNone(t, primaryQueryKey)
}

// The primary's own Target may carry a key too (its Header, a ?key= in its
// BaseURL): its answer's Request is the caller's as well.
func TestFallbackPrimarysAnswerDoesNotHandTheCallerItsConfiguredKey(t *testing.T) {
	const queryKey, headerKey = "PRIMARY-config-query-secret", "Bearer sk-PRIMARY-config-secret"
	primary := httptest.NewServer(http.HandlerFunc(answerChat))
	defer primary.Close()
	fb, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: primary.URL + "/v1?key=" + queryKey, Header: http.Header{"Authorization": {headerKey}}},
		{Name: "second", BaseURL: "http://127.0.0.1:1/v1"},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(primary.Client().Transport, fb)}
	resp, err := client.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	answeredBy(t, resp, err, "primary")
	assert.NotContains(t, resp.Request.URL.String(), queryKey)
	assert.NotEqual(t, headerKey, resp.Request.Header.Get("Authorization"))
}
