package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a request with both Content-Length and Transfer-Encoding:
// chunked was read as chunked (net/http drops the Content-Length before
// the handler sees it) and its connection kept open, so what followed its
// chunks was served as the next request. RFC 9112 (6.1) says the server
// must close the connection after answering such a request: a front
// proxy that framed it by its Content-Length sends a next request, maybe
// another tenant's, on that connection, which would then be read with the
// smuggled bytes in front of it. The proxy closes the connection after
// every chunked request (the handler cannot tell whether a Content-Length
// came with it; the SDKs send their JSON with a length).
func TestAChunkedRequestWithAContentLengthSmugglesNoSecondRequest(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		ran = append(ran, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	const h = "Host: proxy\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\n"
	smuggled := "DELETE /v1/files/file-of-another-tenant HTTP/1.1\r\n" + h + "\r\n"
	for _, framing := range []string{fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chatBody)), "Transfer-Encoding: chunked\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\n"+h+framing+"\r\n"+fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(chatBody), chatBody)+smuggled)
		require.NoError(t, err)
		out, err := io.ReadAll(conn) // until the proxy closes the connection
		conn.Close()
		assert.NoError(t, err, "the proxy closes the connection after its answer")
		assert.Equal(t, 1, strings.Count(string(out), "HTTP/1.1 "), "one answer, then the connection closed: %q", out)
		assert.True(t, strings.HasPrefix(string(out), "HTTP/1.1 200 "), "%.40q", out)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"POST /v1/chat/completions", "POST /v1/chat/completions"}, ran, "the upstream ran the chunked requests only")
}

// Was a bug: an HTTP/1.0 request carrying Transfer-Encoding: chunked was
// read by its Content-Length, or as bodiless without one (net/http drops
// the Transfer-Encoding of an HTTP/1.0 request before the handler sees
// it), and its connection kept open when it asked for keep-alive, so that
// what its chunks held past that length was served as the next request.
// RFC 9112 (6.1) says the server must take such a message's framing as
// faulty and close the connection after answering it: a front proxy that
// framed it by its chunks sends the next request, maybe another tenant's,
// on that connection. The proxy closes the connection after every HTTP/1.0
// request (the handler cannot tell whether a Transfer-Encoding came with
// it).
func TestAnHTTP10RequestWithATransferEncodingSmugglesNoSecondRequest(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		ran = append(ran, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	const h = "Host: proxy\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\n"
	smuggled := "DELETE /v1/files/file-of-another-tenant HTTP/1.1\r\n" + h + "\r\n"
	size := fmt.Sprintf("%x\r\n", len(smuggled))
	chunks := size + smuggled + "\r\n0\r\n\r\n" // one chunk, to a front proxy: the smuggled request
	for _, framing := range []string{fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(size)), "Transfer-Encoding: chunked\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\n"+h+framing+"\r\n"+chunks)
		require.NoError(t, err)
		out, err := io.ReadAll(conn) // until the proxy closes the connection
		conn.Close()
		assert.NoError(t, err, "the proxy closes the connection after its answer")
		assert.Equal(t, 1, strings.Count(string(out), "HTTP/1."), "one answer, then the connection closed: %q", out)
		assert.True(t, strings.HasPrefix(string(out), "HTTP/1.0 200 "), "%.40q", out)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"POST /v1/chat/completions", "POST /v1/chat/completions"}, ran, "the upstream ran the HTTP/1.0 requests only")
}
