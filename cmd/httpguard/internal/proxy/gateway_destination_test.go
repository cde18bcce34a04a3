package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatewaySim is a loopback AI gateway as Portkey's and Helicone's
// document theirs: it sends a request on to the host its
// x-portkey-custom-host, x-portkey-config's custom_host or
// Helicone-Target-Url names (its provider otherwise), with the provider
// key a virtual key stands for when the operator's Portkey key and virtual
// key come with it (the client's Authorization otherwise), and with its
// Helicone-Auth.
type gatewaySim struct {
	provider, attacker *httptest.Server
	gateway            *httptest.Server

	mu     sync.Mutex
	stolen []string // the credentials the attacker's host received
	routed []string // the Authorization the provider received
}

const (
	vaultKey  = "sk-vault-openai-0123456789abcdef"
	portkeyPK = "pk-operator-0123456789abcdef"
	virtualVK = "vk-operator-prod-0123456789"
)

func newGatewaySim(t *testing.T) *gatewaySim {
	t.Helper()
	g := &gatewaySim{}
	record := func(to *[]string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			g.mu.Lock()
			*to = append(*to, r.Header.Get("Authorization"))
			if v := r.Header.Get("Helicone-Auth"); v != "" {
				*to = append(*to, v)
			}
			g.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
		}
	}
	g.provider = httptest.NewServer(record(&g.routed))
	t.Cleanup(g.provider.Close)
	g.attacker = httptest.NewServer(record(&g.stolen))
	t.Cleanup(g.attacker.Close)
	g.gateway = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		dest := g.provider.URL
		var cfg struct {
			CustomHost string `json:"custom_host"`
		}
		if json.Unmarshal([]byte(r.Header.Get("X-Portkey-Config")), &cfg) == nil && cfg.CustomHost != "" {
			dest = cfg.CustomHost
		}
		dest = cmpOr(r.Header.Get("X-Portkey-Custom-Host"), r.Header.Get("Helicone-Target-Url"), dest)
		auth := r.Header.Get("Authorization")
		if r.Header.Get("X-Portkey-Api-Key") == portkeyPK && r.Header.Get("X-Portkey-Virtual-Key") == virtualVK {
			auth = "Bearer " + vaultKey
		}
		out, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(dest, "/")+"/chat/completions", strings.NewReader(string(body)))
		out.Header.Set("Content-Type", "application/json")
		out.Header.Set("Authorization", auth)
		if v := r.Header.Get("Helicone-Auth"); v != "" {
			out.Header.Set("Helicone-Auth", v)
		}
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			http.Error(w, "gateway: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(g.gateway.Close)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	return g
}

func cmpOr(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Was a bug: without tenants the proxy drops none of a client's gateway
// headers, and an upstream's headers may carry the operator's credentials
// for an AI gateway (Portkey's x-portkey-api-key and a virtual key standing
// for a provider key in its vault, Helicone's Helicone-Auth), which the
// client does not hold. The client's x-portkey-custom-host,
// x-portkey-config with a custom_host, or Helicone-Target-Url had the
// gateway send the request, with those credentials or the key they stand
// for, to a host of the client's choosing.
func TestAClientWithoutTenantsDoesNotRouteAGatewayHoldingTheOperatorsCredentials(t *testing.T) {
	g := newGatewaySim(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, g.gateway.URL+"/v1"), Header: http.Header{
		"X-Portkey-Api-Key": {portkeyPK}, "X-Portkey-Virtual-Key": {virtualVK}, "Helicone-Auth": {"Bearer sk-helicone-operator-0123456789"},
	}}}})
	for _, h := range [][]string{
		{"X-Portkey-Custom-Host", g.attacker.URL},
		{"X-Portkey-Config", `{"custom_host":"` + g.attacker.URL + `"}`},
		{"Helicone-Target-Url", g.attacker.URL},
	} {
		resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client-own", h[0], h[1])
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", h[0], out)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Empty(t, g.stolen, "the operator's credentials reached the client's host")
	assert.Subset(t, g.routed, []string{"Bearer " + vaultKey, "Bearer sk-helicone-operator-0123456789"}, "the gateway's own routing")
}

// Without tenants and without credentials in the upstream's headers, every
// key a request carries is the client's own: its gateway headers pass, as
// the README says, and so its key (the proxy sends none of its own).
func TestAClientWithoutTenantsRoutesAGatewayWithItsOwnKey(t *testing.T) {
	g := newGatewaySim(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, g.gateway.URL+"/v1"), KeyEnv: "OPENAI_KEY",
		Header: http.Header{"X-Portkey-Provider": {"openai"}}}}, Getenv: realKeys})
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client-own", "X-Portkey-Custom-Host", g.attacker.URL)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Equal(t, []string{"Bearer sk-client-own"}, g.stolen, "the client's own host, with its own key")
}

// Observability headers are no route: a client's trace and metadata still
// reach a gateway whose credentials the upstream's headers hold.
func TestAGatewaysObservabilityHeadersPassWithoutTenants(t *testing.T) {
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got = r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), Header: http.Header{"X-Portkey-Api-Key": {portkeyPK}}}}})
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client-own",
		"X-Portkey-Trace-Id", "trace-1", "X-Portkey-Metadata", `{"_user":"u1"}`, "Helicone-Property-Team", "search", "Helicone-User-Id", "u1",
		"X-Portkey-Custom-Host", "https://evil.example", "X-Portkey-Azure-Resource-Name", "evil", "Helicone-OpenAI-Api-Base", "https://evil.example")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	require.NotNil(t, got)
	for name, want := range map[string]string{"X-Portkey-Trace-Id": "trace-1", "X-Portkey-Metadata": `{"_user":"u1"}`,
		"Helicone-Property-Team": "search", "Helicone-User-Id": "u1", "X-Portkey-Api-Key": portkeyPK, "Authorization": "Bearer sk-client-own"} {
		assert.Equal(t, want, got.Get(name), name)
	}
	for _, name := range []string{"X-Portkey-Custom-Host", "X-Portkey-Azure-Resource-Name", "Helicone-Openai-Api-Base"} {
		assert.Empty(t, got.Values(name), name)
	}
}
