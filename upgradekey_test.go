package httpguard

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// OpenAI's Responses API runs a WebSocket on its own path (GET
// /v1/responses, upgraded): every response.create sent over it is billed,
// and no answer the Budget reads reports it, so a Budget refuses a
// protocol upgrade. It looked for one in the first value of the canonical
// key alone; but net/http writes every value, and a key set directly in
// the map as it is ("upgrade"), and servers read header names in any case:
// such an upgrade went through unpriced, and the session spent outside
// the Limit. An Upgrade under the canonical key is refused before it is
// sent, whichever of its values asks; one under another spelling, which
// the Budget does not range over the header to find, is refused when its
// 101 comes back: its connection is closed before anything is sent over
// it.
func TestBudgetRefusesAnUpgradeHoweverItsHeaderIsWritten(t *testing.T) {
	var upgraded atomic.Int32
	sent := make(chan []byte, 4) // what the client sent over each upgraded connection
	srv := switchingServer(t, func(conn net.Conn, brw *bufio.ReadWriter) {
		upgraded.Add(1)
		conn.SetReadDeadline(time.Now().Add(time.Minute)) // a guard: the client's Close ends the read at once
		got, _ := io.ReadAll(brw)
		sent <- got
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	retrier, _ := newTestRetrier(t, DefaultRetryPolicy())
	c := clientFor(t, retrier, b)
	for i, h := range []http.Header{
		{"Upgrade": {"", "websocket"}, "Connection": {"Upgrade"}},
		{"upgrade": {"websocket"}, "connection": {"Upgrade"}},
		{"UPGRADE": {"websocket"}, "Connection": {"Upgrade"}},
	} {
		req, err := http.NewRequest("GET", srv.URL+"/v1/responses", nil)
		require.NoError(t, err)
		req.Header = h
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel, "%v: a protocol upgrade spends outside any answer", h)
		var re *RetryError
		require.ErrorAs(t, err, &re)
		if i == 0 { // refused before it was sent
			assert.True(t, IsRefusal(err), "%v", h)
			assert.Zero(t, re.Attempts, "%v", h)
			continue
		}
		assert.False(t, IsRefusal(err), "%v: sent, so no refusal", h)
		assert.Equal(t, 1, re.Attempts, "%v: one attempt, not sent again", h)
	}
	for range 2 { // the server's side of each upgrade, done once the client closed it
		assert.Empty(t, <-sent, "the upgraded connection was closed before anything was sent over it")
	}
	require.Equal(t, int32(2), upgraded.Load(), "the canonical key is refused before it is sent; the others are answered 101, once each")
}

// An upgrade that BudgetConfig.Exempt lets through keeps its 101, under
// any spelling of its key.
func TestBudgetExemptUpgradeKeepsItsConnection(t *testing.T) {
	srv := switchingServer(t, func(_ net.Conn, brw *bufio.ReadWriter) {
		io.Copy(brw, brw) // echo until the client closes
		brw.Flush()
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Exempt: func(*http.Request) bool { return true }})
	for _, h := range []http.Header{{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, {"upgrade": {"websocket"}, "connection": {"Upgrade"}}} {
		req, err := http.NewRequest("GET", srv.URL+"/v1/responses", nil)
		require.NoError(t, err)
		req.Header = h
		resp, err := clientFor(t, b).Do(req)
		require.NoError(t, err, "%v", h)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		rw, ok := resp.Body.(io.ReadWriteCloser)
		require.True(t, ok)
		_, err = rw.Write([]byte("ping"))
		require.NoError(t, err)
		got := make([]byte, 4)
		_, err = io.ReadFull(rw, got)
		require.NoError(t, err)
		assert.Equal(t, "ping", string(got))
		rw.Close()
	}
}

// switchingServer answers every request 101 Switching Protocols, as a
// websocket server does, then hands the connection to then, and closes it
// when then returns.
func switchingServer(t *testing.T, then func(conn net.Conn, brw *bufio.ReadWriter)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		then(conn, brw)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A refusal names the path sent; an opaque URL's authority may carry a key
// in its user info, which the error leaves out.
func TestBudgetRefusalLeavesAnOpaqueURLsUserInfoOut(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	host := strings.TrimPrefix(api.srv.URL, "http://")
	for _, opaque := range []string{"//user:sk-secret-1@" + host + "/v1/realtime/sessions", "//user:sk-secret-1@" + host + "/v1/videos"} {
		req, err := http.NewRequest("POST", api.srv.URL, strings.NewReader(`{"model":"m"}`))
		require.NoError(t, err)
		req.URL.Opaque = opaque
		// The RoundTripper's error: http.Client quotes the URL it was
		// given itself, as it is.
		resp, err := b.Wrap(http.DefaultTransport).RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel, opaque)
		assert.NotContains(t, err.Error(), "sk-secret-1")
		assert.Contains(t, err.Error(), "//"+host+"/v1/")
	}
	assert.Zero(t, api.hits.Load())
}

// An upgrade the Budget closes at its 101 (see switchedProtocols) is the
// client's doing, not the provider's: no Breaker counts it a failure, and
// no Fallback sends it to the next target. Found by a review: as a
// finalError, they read it as a transport error worth another try.
func TestAnUpgradeClosedAtIts101IsNoProviderFailure(t *testing.T) {
	upgrade := func(t *testing.T, c *http.Client, url string) {
		req, err := http.NewRequest("GET", url+"/v1/responses", nil)
		require.NoError(t, err)
		req.Header = http.Header{"upgrade": {"websocket"}, "connection": {"Upgrade"}}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorIs(t, err, ErrUnknownModel)
	}
	t.Run("breaker", func(t *testing.T) {
		srv := switchingServer(t, func(net.Conn, *bufio.ReadWriter) {})
		br, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 2})
		require.NoError(t, err)
		c := clientFor(t, br, newTestBudget(t, BudgetConfig{Limit: Dollar}))
		for range 3 {
			upgrade(t, c, srv.URL)
		}
		req, err := http.NewRequest("GET", srv.URL+"/v1/models", nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		require.NotErrorIs(t, err, ErrCircuitOpen, "a client's own upgrade opened the provider's circuit")
	})
	t.Run("fallback", func(t *testing.T) {
		var second atomic.Int32
		primary := switchingServer(t, func(net.Conn, *bufio.ReadWriter) {})
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			second.Add(1) // before it answers: counted by the time any answer is read
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		t.Cleanup(other.Close)
		f, err := NewFallback(FallbackConfig{Targets: []Target{{Name: "a", BaseURL: primary.URL}, {Name: "b", BaseURL: other.URL}}})
		require.NoError(t, err)
		upgrade(t, clientFor(t, f, newTestBudget(t, BudgetConfig{Limit: Dollar})), primary.URL)
		assert.Zero(t, second.Load(), "the upgrade was sent again, to the next target")
	})
}
