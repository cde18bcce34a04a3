package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: an upstream URL with a port but no host name, as
// http://${LLM_HOST}:4000/v1 renders with the variable unset, passed the
// check for a host (url.URL.Host is ":4000"), and the proxy sent every
// request there: net's dialer takes an empty host for the local machine,
// so that with tenants the real key went to whatever listened on that
// port of the proxy's host (measured: "Bearer sk-real-openai" reached an
// httptest server on 127.0.0.1).
func TestAnUpstreamURLWithoutAHostNameIsRefused(t *testing.T) {
	for _, s := range []string{"http://:4000/v1", "https://:443/v1"} {
		_, err := ParseUpstreamURL(s)
		require.Error(t, err, s)
		assert.Contains(t, err.Error(), "has no host", s)
	}
	_, err := ParseFile(strings.NewReader(`upstreams:
  - prefix: /v1
    url: https://api.holysheep.ai/v1
    fallbacks:
      - base_url: http://:4000/v1
        key_env: FALLBACK_KEY
`), "proxy.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "proxy.yaml:5: base_url:")
	assert.Contains(t, err.Error(), "has no host")
}
