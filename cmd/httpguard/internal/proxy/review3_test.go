package proxy

// Found by a third adversarial review; each test failed before its fix.

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A refused request's body is read within BodyReadTimeout too. Once the
// handler has refused a request without reading its body (an unknown
// key, a path no upstream serves, /healthz), net/http reads up to 256 KiB
// of what is left of it before it writes the answer, with no deadline: a
// client with no key that sends a Content-Length and then nothing held a
// connection and its goroutine for as long as it liked, and never got its
// 401. The README promises "request bodies read within 30s".
func TestARefusedRequestsBodyIsReadWithinBodyReadTimeout(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.BodyReadTimeout = 100 * time.Millisecond
	r := start(t, c)
	for path, status := range map[string]int{"/v1/chat/completions": 401, "/nowhere": 404, "/healthz": 200} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		_, err = conn.Write([]byte("POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\""))
		require.NoError(t, err)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if assert.NoError(t, err, "%s: the answer comes once the body's time is up", path) {
			resp.Body.Close()
			assert.Equal(t, status, resp.StatusCode, path)
		}
		conn.Close()
	}
	assert.Zero(t, srv.Stats().Requests)
}
