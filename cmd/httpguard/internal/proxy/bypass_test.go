package proxy

// Requests that try to slip past the proxy's checks: protocol upgrades,
// bodies that read as JSON and as a form, keys in trailers. Found by an
// adversarial review; each test failed before its fix.

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

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
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

// An upgrade (OpenAI's Realtime API is a WebSocket at GET
// /v1/realtime?model=...) has no body for the model check or the Budgets to
// read, and a tunnel is never metered: it is refused, unsent, even for a
// tenant whose budget has no room left.
func TestAnUpgradeIsRefusedUnsent(t *testing.T) {
	up, got := upgradeServer(t)
	r := start(t, Config{
		Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Prices:    testPrices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"},
			Budget: &BudgetSpec{Limit: 10 * httpguard.Nanodollar}}},
	})
	_, _, resp := r.dialUpgrade(t, "/v1/realtime?model=gpt-4o-realtime-preview", "Authorization: Bearer vk-chat\r\n")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Empty(t, got(), "nothing reaches the upstream, least of all the real key")
}

// Without tenants an upgrade is refused too: an open tunnel would also
// outlive the shutdown grace, since http.Server does not track hijacked
// connections.
func TestAnUpgradeIsRefusedWithoutTenants(t *testing.T) {
	up, got := upgradeServer(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	_, _, resp := r.dialUpgrade(t, "/v1/realtime", "")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Empty(t, got())
}

// curl --http2 on an http:// URL asks to upgrade to h2c; the request is
// served in HTTP/1.1, as net/http's server answers it.
func TestAnH2CUpgradeIsServedAsHTTP1(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, srv.BaseURL())}}})
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 1, srv.Stats().Requests)
}

// The model allow-list and the Budgets read a body as JSON. A body that is
// valid JSON naming an allowed model can also be an
// application/x-www-form-urlencoded form naming another, which an upstream
// that reads forms (net/http's ParseForm, Starlette's request.form()) would
// run: a key checked as JSON must send JSON.
func TestAFormBodyIsRefusedForAKeyCheckedAsJSON(t *testing.T) {
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
	assert.Empty(t, models, "nothing reaches the upstream")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "json_required", code)
}

// The proxy sends the body it buffered with its length, so a chunked
// request's trailers, which could carry the client's key, go nowhere.
func TestRequestTrailersStayWithTheProxy(t *testing.T) {
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
