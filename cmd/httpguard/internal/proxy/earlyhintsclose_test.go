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

// Was a bug: the connection of a chunked request, which the proxy closes
// after its answer so that a front proxy that framed the request by a
// Content-Length cannot slip a second request in behind its chunks, stayed
// open when the upstream sent a 1xx (103 Early Hints) before its answer:
// ReverseProxy clears the handler's headers after writing a 1xx, the
// Connection: close among them, and the bytes after the chunks were served
// as a request of their own.
func TestAChunkedRequestsConnectionClosesAfterAnUpstreams1xx(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		ran = append(ran, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	const h = "Host: proxy\r\nAuthorization: Bearer vk-chat\r\nContent-Type: application/json\r\n"
	smuggled := "DELETE /v1/files/file-of-another-tenant HTTP/1.1\r\n" + h + "\r\n"
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\n"+h+fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chatBody))+
		"\r\n"+fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(chatBody), chatBody)+smuggled)
	require.NoError(t, err)
	out, err := io.ReadAll(conn) // until the proxy closes the connection
	assert.NoError(t, err, "the proxy closes the connection after its answer")
	assert.Equal(t, 1, strings.Count(string(out), "HTTP/1.1 200 "), "one answer, then the connection closed: %q", out)
	assert.Contains(t, string(out), "HTTP/1.1 103 ", "the 103 reached the client")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"POST /v1/chat/completions"}, ran, "the upstream ran the chunked request only")
}
