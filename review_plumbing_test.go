package httpguard

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 101 Switching Protocols answer (a websocket, such as OpenAI's Realtime
// API) has a body net/http makes writable: websocket clients handed the
// guarded *http.Client (coder/websocket's HTTPClient) require an
// io.ReadWriteCloser and fail without one. With an AttemptTimeout the
// Retrier wraps the body it returns, to end the attempt's context when the
// body is closed; it must keep the body writable.
func TestAttemptTimeoutKeepsTheBodyOfASwitchingProtocolsAnswerWritable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo "+line)
	}))
	defer srv.Close()
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Minute
	retrier, _ := newTestRetrier(t, p)
	c := clientFor(t, retrier)

	req, err := http.NewRequest("GET", srv.URL+"/v1/realtime", nil)
	require.NoError(t, err)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	rw, ok := resp.Body.(io.ReadWriteCloser)
	require.True(t, ok, "the body of a 101 is writable, as net/http returns it; got %T", resp.Body)
	_, err = io.WriteString(rw, "hi\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(rw).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo hi\n", line)
}

// A request built by hand may have a nil Header (http.Client gives such a
// request an empty one; net/http's Transport refuses it with an error).
// The Fallback sets a target's headers on its copy of the request: with a
// nil Header that panicked, taking down the caller's goroutine.
func TestFallbackGivesARequestWithoutHeaderTheTargetsHeadersWithoutPanicking(t *testing.T) {
	srv := newServer(t, failFirst(0, http.StatusOK, nil))
	var seen *http.Request
	rig := newFallbackRig(t,
		Target{Name: "primary", BaseURL: srv.URL + "/v1", Header: http.Header{"Authorization": {"Bearer sk-primary"}}},
		Target{Name: "second", BaseURL: "http://127.0.0.1:1/v1"})
	rt := Chain(&http.Transport{}, rig.f, recordLast(&seen))

	u, err := url.Parse(srv.URL + "/v1/chat/completions")
	require.NoError(t, err)
	req := &http.Request{Method: "POST", URL: u, Body: io.NopCloser(strings.NewReader(chatBody("m", 16)))}
	var resp *http.Response
	require.NotPanics(t, func() { resp, err = rt.RoundTrip(req) })
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "Bearer sk-primary", seen.Header.Get("Authorization"))
	assert.Nil(t, req.Header, "the caller's request is left as it was")
}
