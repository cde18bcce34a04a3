package proxy

// Tests from an adversarial review of the proxy (branch rev-proxy). Each
// names the bug it demonstrates; each fails on main because of it.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upgradeServer is an upstream that takes a WebSocket-style upgrade: it
// answers 101 and echoes each line on the hijacked connection. It returns
// the requests it was sent.
func upgradeServer(t *testing.T) (*httptest.Server, func() []*http.Request) {
	var mu sync.Mutex
	var got []*http.Request
	var tunnels sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(r.Context()))
		mu.Unlock()
		if r.Header.Get("Upgrade") == "" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		tunnels.Add(1)
		defer tunnels.Done()
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(conn, "echo "+line)
		}
	}))
	t.Cleanup(func() { srv.Close(); tunnels.Wait() })
	return srv, func() []*http.Request { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

// dialUpgrade sends an upgrade request for path to the proxy on a raw
// connection and returns the connection, its reader and the answer.
func (r *running) dialUpgrade(t *testing.T, path string, header string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+header+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	return conn, br, resp
}

// BUG (auth, money): an Upgrade request (OpenAI's Realtime API is a
// WebSocket at GET /v1/realtime?model=...) has no body, so the model
// allow-list never looks at it and the Budgets pass it unpriced; the
// ReverseProxy then tunnels it with the tenant's real key. A tenant allowed
// only deepseek-v3.2, with a budget of 10 nanodollars (no room for any
// request), gets an open, unmetered session with any model.
func TestReviewAnUpgradeBypassesTheModelAllowListAndTheBudget(t *testing.T) {
	up, got := upgradeServer(t)
	r := start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Prices:    testPrices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"},
			Budget: &BudgetSpec{Limit: 10 * httpguard.Nanodollar}}},
	})
	conn, br, resp := r.dialUpgrade(t, "/v1/realtime?model=gpt-4o-realtime-preview", "Authorization: Bearer vk-chat\r\n")
	if resp.StatusCode == http.StatusSwitchingProtocols {
		io.WriteString(conn, "response.create\n")
		line, _ := br.ReadString('\n')
		t.Logf("the tunnel is open: the upstream answered %q", line)
	}
	assert.NotEqual(t, http.StatusSwitchingProtocols, resp.StatusCode, "an upgrade must not be tunnelled past the model check and the budget")
	for _, req := range got() {
		assert.NotEqual(t, "Bearer sk-real-openai", req.Header.Get("Authorization"), "the real key reached %s", req.URL)
	}
}

// BUG (robustness, shutdown): a hijacked (upgraded) connection is not
// tracked by http.Server, so Shutdown and Close leave it open, its handler
// never returns, and Serve blocks in inflight.Wait past ShutdownGrace for as
// long as the client keeps the tunnel open: SIGTERM does not stop the proxy.
// (If upgrades are refused, there is no tunnel to outlive the grace.)
func TestReviewAnUpgradedTunnelOutlivesTheShutdownGrace(t *testing.T) {
	up, _ := upgradeServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}, ShutdownGrace: 20 * time.Millisecond})
	conn, _, resp := r.dialUpgrade(t, "/v1/realtime", "")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return // upgrades refused
	}
	r.stop() // SIGTERM
	select {
	case err := <-r.served:
		r.served <- err // for the rig's cleanup
	case <-time.After(500 * time.Millisecond):
		t.Error("Serve has not returned 500ms after its context ended, with a ShutdownGrace of 20ms: an upgraded tunnel holds it")
		conn.Close() // let the rig's cleanup finish
	}
}

// BUG (auth, money): the model allow-list (and the Budget's price) read the
// body as JSON whatever its Content-Type. A body that is valid JSON naming
// an allowed model is also an application/x-www-form-urlencoded form naming
// another; an upstream that reads forms (any net/http server calling
// ParseForm; Starlette's request.form()) runs the other model. The proxy
// already refuses a multipart form for such a tenant ("model unreadable: a
// form"); the urlencoded one passes.
func TestReviewAFormBodyIsJudgedAsJSON(t *testing.T) {
	var mu sync.Mutex
	var models []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		models = append(models, r.PostForm.Get("model"))
		mu.Unlock()
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	resp, body := r.post(t, "/v1/audio/transcriptions", `{"model":"deepseek-v3.2","x":"&model=gpt-4o-transcribe&"}`,
		"Authorization", "Bearer vk-chat", "Content-Type", "application/x-www-form-urlencoded")
	mu.Lock()
	defer mu.Unlock()
	assert.NotEqual(t, []string{"gpt-4o-transcribe"}, models, "the upstream ran a model the tenant may not use (proxy answered %s: %s)", resp.Status, body)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a body the proxy reads as JSON must be sent as JSON")
}

// BUG (secrets): the proxy buffers the body and sends it with a known
// length, but keeps the client's chunked Transfer-Encoding and Trailer map,
// so request trailers reach the upstream; dropKeys only cleans the header.
// A client sending its virtual key as a trailer (X-Api-Key, Authorization)
// has it forwarded to the provider, which the README says never happens.
func TestReviewRequestTrailersReachTheUpstream(t *testing.T) {
	var mu sync.Mutex
	var trailer http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		trailer = r.Trailer.Clone()
		mu.Unlock()
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\n"+
		"Transfer-Encoding: chunked\r\nTrailer: X-Api-Key, Authorization\r\n\r\n%x\r\n%s\r\n0\r\nX-Api-Key: vk-chat\r\nAuthorization: Bearer vk-chat\r\n\r\n",
		len(chatBody), chatBody)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	mu.Lock()
	defer mu.Unlock()
	assert.NotContains(t, fmt.Sprint(trailer), "vk-chat", "the client's virtual key reached the upstream in a trailer")
}
