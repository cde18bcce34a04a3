package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/require"
	"log/slog"
)

// The tests run the proxy end to end on loopback: a client, the proxy
// serving on its own listener, and an upstream (httpguardtest's fault
// server, or an httptest server where a test needs to hold an answer).

var testPrices = httpguard.PriceTable{
	"deepseek-v3.2":     {Input: 28 * httpguard.Cent, CachedInput: 28 * httpguard.Cent / 10, Output: 42 * httpguard.Cent},
	"claude-sonnet-4-5": {Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar},
}

// running is a proxy serving on loopback.
type running struct {
	*Proxy
	URL    string
	logs   *syncBuffer
	stop   context.CancelFunc
	served chan error
	client *http.Client

	once     sync.Once
	serveErr error
}

// wait returns what Serve returned, once it has.
func (r *running) wait() error {
	r.once.Do(func() { r.serveErr = <-r.served })
	return r.serveErr
}

// start serves a proxy made of c on 127.0.0.1 until the test ends.
func start(t *testing.T, c Config) *running {
	t.Helper()
	logs := &syncBuffer{}
	c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	if c.Retry.BaseDelay == 0 {
		c.Retry = RetrySpec{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	}
	if c.Getenv == nil {
		c.Getenv = func(string) string { return "" }
	}
	if c.Transport == nil {
		c.Transport = NewTransport()
	}
	p, err := New(c)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	r := &running{Proxy: p, URL: "http://" + ln.Addr().String(), logs: logs, stop: stop, served: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{}}}
	go func() { r.served <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, r.wait())
		r.client.CloseIdleConnections()
		require.NoError(t, p.Close())
	})
	return r
}

// faultServer starts an httpguardtest server until the test ends.
func faultServer(t *testing.T, c httpguardtest.Config) *httpguardtest.Server {
	t.Helper()
	srv, err := httpguardtest.NewServer(c)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return srv
}

// billableAt is what srv may bill for the attempts that reached it, at
// price p.
func billableAt(srv *httpguardtest.Server, p httpguard.Price) httpguard.Money {
	st := srv.Stats()
	return p.Cost(httpguard.Usage{InputTokens: st.BillablePromptTokens, CachedInputTokens: st.BillableCachedTokens, OutputTokens: st.BillableCompletionTokens})
}

// upstreams routes /v1 to srv's OpenAI endpoint and /v1/messages to its
// Anthropic one, the real keys in OPENAI_KEY and ANTHROPIC_KEY.
func upstreams(t *testing.T, srv *httpguardtest.Server) []Upstream {
	t.Helper()
	u, err := ParseUpstreamURL(srv.BaseURL())
	require.NoError(t, err)
	m, err := ParseUpstreamURL(srv.BaseURL() + "/messages")
	require.NoError(t, err)
	return []Upstream{{Prefix: "/v1", URL: u, API: OpenAI, KeyEnv: "OPENAI_KEY"},
		{Prefix: "/v1/messages", URL: m, API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}}
}

func realKeys(name string) string {
	return map[string]string{"OPENAI_KEY": "sk-real-openai", "ANTHROPIC_KEY": "sk-ant-real"}[name]
}

func keyHash(key string) [32]byte { return sha256.Sum256([]byte(key)) }

const chatBody = `{"model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"a secret prompt: say ok"}]}`

// post sends body to path with headers, and returns the answer read whole.
func (r *running) post(t *testing.T, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// get sends a GET of path with headers, and returns the answer, its body
// closed.
func (r *running) get(t *testing.T, path string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp
}

// errorOf decodes an OpenAI-style error body.
func errorOf(t *testing.T, body []byte) (typ, code, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Type, Message string
			Code          *string
		}
	}
	require.NoError(t, json.Unmarshal(body, &e), string(body))
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return e.Error.Type, code, e.Error.Message
}

// accessLog returns the access log's request records.
func (r *running) accessLog(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.logs.String()))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), sc.Text())
		if rec["msg"] == "request" {
			out = append(out, rec)
		}
	}
	return out
}

// lastLog waits for the access log record of the latest request: it is
// written once the handler returns, just after the client has its answer.
func (r *running) lastLog(t *testing.T, n int) map[string]any {
	t.Helper()
	var recs []map[string]any
	require.Eventually(t, func() bool { recs = r.accessLog(t); return len(recs) >= n }, 5*time.Second, time.Millisecond)
	return recs[n-1]
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := ParseUpstreamURL(s)
	require.NoError(t, err)
	return u
}

// jsonString returns the string at path in a JSON body, quoted as JSON.
func jsonString(t *testing.T, body []byte, path ...string) string {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(body, &v))
	for _, k := range path {
		m, ok := v.(map[string]any)
		require.True(t, ok, string(body))
		v = m[k]
	}
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// openStream starts a streaming request (to heldStream) and reads its first
// event, which must arrive while the upstream holds the rest; the reader
// has the rest of the stream.
func (r *running) openStream(t *testing.T) *bufio.Reader {
	t.Helper()
	resp, err := r.client.Post(r.URL+"/v1/chat/completions", "application/json", strings.NewReader(streamBody))
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	require.NoError(t, err, "the first event arrives while the upstream still holds the rest")
	require.Contains(t, first, `"first"`)
	return br
}

// metricsText is what the proxy's Metrics handler serves.
func (r *running) metricsText(t *testing.T) string {
	t.Helper()
	w := httptest.NewRecorder()
	r.Metrics().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, w.Code)
	return w.Body.String()
}
