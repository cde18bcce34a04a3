package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/require"
)

// Was a bug: the informational answers (1xx) an upstream sends before its
// answer, which ReverseProxy writes to the client as they come, had no
// write deadline. To a client that stopped reading, an upstream sending
// large 103s (net/http bounds neither their number nor, once one is
// passed on, their size) held the handler, the upstream's connection and
// the budgets' reservations for as long as the client kept its connection
// open, where WriteStallTimeout ends every other write that stalls.
func TestAClientThatStopsReadingInformationalAnswersIsCut(t *testing.T) {
	upstreamDone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</"+strings.Repeat("x", 256<<10)+">; rel=preload")
		for range 1000 { // 256 MB: more than the sockets' buffers hold
			if r.Context().Err() != nil { // the proxy's transport closed the connection
				return
			}
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Del("Link")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		WriteStallTimeout: 100 * time.Millisecond, ShutdownGrace: 100 * time.Millisecond,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	_, err = fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(chatBody), chatBody)
	require.NoError(t, err)
	// The client reads nothing, and keeps its connection open.
	select {
	case <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's connection is still held")
	}
	require.Eventually(t, func() bool { return len(r.accessLog(t)) == 1 }, 5*time.Second, time.Millisecond, "the request ended")
}

// A 1xx's write bound ends with it: an answer that comes later than
// WriteStallTimeout after the upstream's 103 (a model writing a long
// answer) still reaches a client that reads.
func TestAnAnswerLongAfterAnInformationalOneReachesTheClient(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		time.Sleep(300 * time.Millisecond) // the model writing its answer
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}, WriteStallTimeout: 100 * time.Millisecond})
	resp, body := r.post(t, "/v1/chat/completions", `{"model":"deepseek-v3.2","stream":true,"messages":[]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "[DONE]")
}
