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

// Bug: usage sent after a stream's terminal event is ignored. The SSE
// scanner stops reading at message_stop ("what follows is not read"), but
// anthropic-sdk-go reads on to EOF and keeps the last message_delta's
// usage. A stream that ends message_stop, then a message_delta with more
// output, is charged the earlier, smaller usage: the Budget charges less
// than what the answer (and the SDK the caller uses) reports.
func TestReviewBudgetChargesUsageSentAfterTheTerminalEvent(t *testing.T) {
	stream := "event: message_start\n" +
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," +
		"\"model\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":90}}\n\n"
	api := newFakeAPI(t, answerStream(stream))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/messages", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, stream, string(got), "the caller reads the late usage too")

	reported := Money(10*1000 + 90*2000) // the last usage the stream reports
	assert.GreaterOrEqual(t, b.Spent(), reported,
		"charged %v, less than the %v the stream's last usage says (or the reservation %v)", b.Spent(), reported, reservation(body, 100))
}

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
