package proxy

import (
	"math"
	"net/http"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: net/http reads a request's headers within MaxHeaderBytes and
// 4096 bytes more, a sum that overflowed for a MaxHeaderBytes within 4096
// of the largest int (--max-header-bytes 9223372036854775807, "no
// limit"): the proxy started, and answered every request, /healthz
// included, 431 Request Header Fields Too Large.
func TestTheLargestMaxHeaderBytesServesRequests(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), MaxHeaderBytes: math.MaxInt})
	resp := r.get(t, "/healthz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, out := r.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
}
