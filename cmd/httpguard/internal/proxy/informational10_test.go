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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: an upstream's 1xx (103 Early Hints, an unasked 100 Continue)
// reached HTTP/1.0 clients, which RFC 9110 (15.2) forbids: they know no
// informational answers and read the 1xx as the answer, the real one
// after it as its body. net/http writes a 1xx to any client, and nginx's
// proxy_pass talks HTTP/1.0 to what it proxies by default.
func TestAnHTTP10ClientGetsNoInformationalAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.0\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(chatBody), chatBody)
	require.NoError(t, err)
	out, err := io.ReadAll(conn) // an HTTP/1.0 answer ends with the connection
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(out), "HTTP/1.0 200 "), "the answer comes first: %q", out)
	assert.NotContains(t, string(out), " 103 ")
	assert.EqualValues(t, 200, r.lastLog(t, 1)["status"])
}
