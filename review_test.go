package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Adversarial review of the root package (rev-core). Each test names the
// bug it shows; each fails on main.

// Bug: a Fallback forwards credential headers outside its fixed list to
// the other targets. credentialHeaders names Authorization, X-Api-Key,
// Api-Key, X-Goog-Api-Key, Cookie and Proxy-Authorization; the primary's
// key in Azure API Management's Ocp-Apim-Subscription-Key, a Cloudflare AI
// Gateway's cf-aig-authorization or Helicone's Helicone-Auth, and Azure
// APIM's subscription-key query parameter, go to the fallback provider.
func TestReviewFallbackKeepsEveryPrimaryCredentialFromOtherTargets(t *testing.T) {
	primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{"choices":[]}`) })
	r := newFallbackRig(t, Target{Name: "primary", BaseURL: primary.URL + "/v1"},
		Target{Name: "second", BaseURL: second.URL + "/v1", Header: http.Header{"Authorization": {secondKey}}})
	var seen *http.Request
	c := clientFor(t, r.f, recordLast(&seen))
	req, err := http.NewRequest("POST", primary.URL+"/v1/chat/completions?subscription-key=sk-primary-q", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	secrets := map[string]string{
		"Ocp-Apim-Subscription-Key": "sk-primary-apim",
		"Cf-Aig-Authorization":      "Bearer sk-primary-cf",
		"Helicone-Auth":             "Bearer sk-primary-helicone",
	}
	for k, v := range secrets {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()

	require.Equal(t, "second", resp.Header.Get(TargetHeader))
	for k := range secrets {
		assert.Empty(t, seen.Header.Values(k), "the primary's %s went to the second target", k)
	}
	assert.NotContains(t, seen.URL.RawQuery, "sk-primary", "the primary's query key went to the second target")
}
