package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An upstream URL that leads back to the proxy through another server (a
// load balancer, a Service, a name that resolves to the proxy) passes the
// checks at start, which see only the proxy's own address. Each request
// then came back as a new one, reserved again, retried on each hop's
// failures, until connections ran out. The proxy names itself in Via and
// refuses at once, unretried, a request that names it already.
func TestARequestThatComesBackToTheProxyIsRefused(t *testing.T) {
	var back atomic.Pointer[url.URL]
	var hops atomic.Int64
	middle := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hops.Add(1)
		httputil.NewSingleHostReverseProxy(back.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(middle.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, middle.URL+"/v1")}}})
	u, err := url.Parse(r.URL)
	require.NoError(t, err)
	back.Store(u)

	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client", "Via", "1.1 corporate-proxy")
	require.Equal(t, http.StatusLoopDetected, resp.StatusCode, string(body))
	_, code, msg := errorOf(t, body)
	assert.Equal(t, "proxy_loop", code)
	assert.Contains(t, msg, "came back")
	assert.EqualValues(t, 1, hops.Load(), "refused on its first return, not retried")
	r.lastLog(t, 2)
	assert.Equal(t, "proxy_loop", r.accessLog(t)[0]["refusal"], "the request that came back")
}

// Another httpguard proxy in front or behind is no loop: each names
// itself apart.
func TestProxiesInARowAreNoLoop(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	inner := start(t, Config{Upstreams: upstreams(t, srv)})
	outer := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, inner.URL+"/v1")}}})
	resp, body := outer.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
}
