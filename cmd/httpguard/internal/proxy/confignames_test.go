package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a header written without a space after its colon
// ({x-portkey-api-key:pk-live-…}, in YAML one scalar) was refused as a
// header name, quoted whole in the error, the gateway's key with it, on
// stderr and in whatever keeps it. A name that is not a header's is now
// not shown.
func TestAHeaderNameHoldingAKeyIsNotQuotedInTheError(t *testing.T) {
	const secret = "pk-live-SECRET0123456789"
	for _, y := range []string{
		"upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers: {x-portkey-api-key:" + secret + "}\n",
		"upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers:\n      \"x-portkey-api-key: " + secret + "\": \"\"\n",
		"upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers: {Helicone-Auth=Bearer " + secret + ": x}\n",
		"upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    fallbacks:\n      - base_url: http://y/v1\n        key_env: K\n        headers: {x-portkey-api-key:" + secret + "}\n",
	} {
		_, err := ParseFile(strings.NewReader(y), "p.yaml")
		require.Error(t, err, y)
		assert.Contains(t, err.Error(), "headers: a name that is not a header's (not shown: it may hold a key); write each header as name: value, with a space after the colon")
		assert.NotContains(t, err.Error(), "SECRET", y)
	}
	// A header name that is one is still named.
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    headers: {x-team: \"a\\nb\"}\n"), "p.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `headers: "x-team" is not a header an upstream can set`)
}

// Was a bug: an rps too large for a whole burst (1e308, or --rps 1e19)
// was refused as "Burst must be >= 0, got -9223372036854775808": the
// burst it defaults to, rps rounded up, overflowed, and the error named a
// field the operator never set. Such a rate limits nothing and is taken,
// as the library takes it.
func TestAHugeRPSIsNotRefusedForAnOverflowedBurst(t *testing.T) {
	for _, rps := range []string{"1e308", "1e19", "9223372036854775807"} {
		y := "upstreams:\n  - prefix: /v1\n    url: http://x/v1\n    key_env: K\ntenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) +
			"\n    limits: {rps: " + rps + "}\n"
		f, err := ParseFile(strings.NewReader(y), "p.yaml")
		require.NoError(t, err, rps)
		assert.Positive(t, f.Tenants[0].Limits.config().Burst, rps)
		assert.NoError(t, LimitSpec{RPS: f.Tenants[0].Limits.RPS}.Check(), rps)
	}
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Limits = LimitSpec{RPS: 1e308}
	c.Tenants[1].Limits = LimitSpec{RPS: 1e308, MaxWait: -1}
	r := start(t, c)
	for range 3 {
		resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	}
}
