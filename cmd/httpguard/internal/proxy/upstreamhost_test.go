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

// Was a stumble: a port no TCP connection can have (0, or above 65535: a
// digit too many) passed the check, url.Parse wanting digits only, and
// the proxy started; each request then failed to dial, was retried for
// half a minute by the default --max-retries and --base-delay, and was
// answered 502, where the README promises a bad config line is an error
// at start that names it.
func TestAnUpstreamURLWithAPortOutOfRangeIsRefused(t *testing.T) {
	for _, s := range []string{"https://api.holysheep.ai:0/v1", "https://api.holysheep.ai:65536/v1", "http://127.0.0.1:80800/v1"} {
		_, err := ParseUpstreamURL(s)
		require.Error(t, err, s)
		assert.Contains(t, err.Error(), "the port must be from 1 to 65535", s)
	}
	for _, s := range []string{"https://api.holysheep.ai:443/v1", "http://127.0.0.1:65535/v1", "http://[::1]:1/v1", "https://api.holysheep.ai:/v1"} {
		_, err := ParseUpstreamURL(s)
		assert.NoError(t, err, s)
	}
}

// Was a stumble: an upstream URL's path was taken as written, where the
// upstream reads another: a trailing space (HTTPGUARD_UPSTREAM from an
// env file) became /v1%20, and every request went to
// /v1%20/chat/completions (measured: the upstream answered each 404);
// /v1/../v2 or /v1// went out unresolved, for the upstream to resolve
// its own way. A prefix must be a clean path; its URL now too.
func TestAnUpstreamURLWhosePathIsNotCleanIsRefused(t *testing.T) {
	for s, want := range map[string]string{
		"https://api.holysheep.ai/v1 ":        "space",
		"https://api.holysheep.ai/v1\t":       "space",
		" https://api.holysheep.ai/v1":        "space",
		"https://api.holysheep.ai/v1/../v2":   "clean path",
		"https://api.holysheep.ai/v1/./chat":  "clean path",
		"https://api.holysheep.ai/v1//":       "clean path",
		"https://api.holysheep.ai//v1":        "clean path",
		"https://api.holysheep.ai/v1%5C..%5C": "clean path",
	} {
		_, err := ParseUpstreamURL(s)
		require.Error(t, err, s)
		assert.Contains(t, err.Error(), want, s)
	}
	for _, s := range []string{"https://api.holysheep.ai", "https://api.holysheep.ai/", "https://api.holysheep.ai/v1/",
		"https://api.example.com/v1/models/claude%4020240620", "https://gateway.ai.cloudflare.com/v1/acct/gw/openai"} {
		_, err := ParseUpstreamURL(s)
		assert.NoError(t, err, s)
	}
}
