package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the path check refused "." and ".." segments, but not a
// backslash, which servers on Windows (IIS, ASP.NET) and some routers
// take as a separator, also escaped (%5C): /v1/..%5Cadmin reached such an
// upstream as /v1/../admin, its base path's parent, with the real key. A
// control character (%00, which C servers end a path at) likewise passed.
func TestABackslashOrAControlCharacterInThePathIsRefused(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As IIS routes: decoded, a backslash is a slash, dot segments resolved.
		mu.Lock()
		ran = append(ran, path.Clean(strings.ReplaceAll(r.URL.Path, `\`, "/")))
		mu.Unlock()
		io.WriteString(w, `{"data":[]}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/tenant-a/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	for _, p := range []string{`/v1/..%5C..%5Ctenant-b/v1/models`, `/v1/..%5ctenant-b`, `/v1/models%5C..%5C..`, `/v1/models%00`, `/v1/models%0A`, `/v1/models%7F`} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
		require.NoError(t, err)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.WriteString(conn, "GET "+p+" HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer vk-chat\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		head, err := io.ReadAll(conn)
		conn.Close()
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(string(head), "HTTP/1.1 400 "), "%s: %.60q", p, head)
	}
	resp := r.get(t, "/v1/models", "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"/tenant-a/v1/models"}, ran, "the upstream ran no path but the clean one")
}
