package proxy

import (
	"net/http"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: behind an AI gateway upstream (Portkey's, Helicone's), a
// tenant's x-portkey-custom-host or Helicone-Target-Url made the gateway
// send the request, with the real key the proxy put in it, to a host of the
// tenant's choosing; x-portkey-config or x-portkey-provider chose another
// provider or config. A gateway's routing is the operator's: it comes from
// the upstream's headers in the config, never from a tenant.
func TestATenantDoesNotRouteAGatewayUpstream(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	c := tenantsConfig(t, srv)
	c.Upstreams[0].Header = http.Header{"X-Portkey-Provider": {"openai"}}
	r := start(t, c)
	resp, _ := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat",
		"X-Portkey-Custom-Host", "https://evil.example/v1", "x-portkey-provider", "anthropic", "X-Portkey-Config", `{"provider":"openai","custom_host":"https://evil.example"}`,
		"Helicone-Target-Url", "https://evil.example", "Helicone-Auth", "Bearer sk-helicone-tenant", "X-Request-Id", "kept")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	h := reqs[0].Header
	assert.Equal(t, "Bearer sk-real-openai", h.Get("Authorization"))
	assert.Equal(t, []string{"openai"}, h.Values("X-Portkey-Provider"), "the upstream's own, in place of the tenant's")
	for _, name := range []string{"X-Portkey-Custom-Host", "X-Portkey-Config", "Helicone-Target-Url", "Helicone-Auth"} {
		assert.Empty(t, h.Values(name), name)
	}
	assert.Equal(t, "kept", h.Get("X-Request-Id"), "other headers pass")
}
