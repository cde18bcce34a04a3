package proxy

// Found by a third adversarial review; each test failed before its fix.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
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

// A request with two Content-Type headers is read by the proxy's JSON
// check as its first (application/json), and sent on with both: an
// upstream that takes the last one (a WSGI server such as gunicorn sets
// CONTENT_TYPE from each header in turn) reads the body as a form, and a
// body that is JSON naming an allowed model is also a form naming another.
// The json_required check is bypassed with one more header.
func TestTwoContentTypesAreRefusedForAKeyCheckedAsJSON(t *testing.T) {
	var mu sync.Mutex
	var models []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if ct := r.Header.Values("Content-Type"); len(ct) > 0 && ct[len(ct)-1] == "application/x-www-form-urlencoded" {
			form, _ := url.ParseQuery(string(body))
			mu.Lock()
			models = append(models, form.Get("model"))
			mu.Unlock()
		}
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Models: []string{"deepseek-v3.2"}}}})
	body := `{"model":"deepseek-v3.2","x":"&model=gpt-4o-transcribe&"}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer vk-chat\r\n"+
		"Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, models, "the upstream read a form naming a model the key may not use")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
