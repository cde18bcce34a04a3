package httpguard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// billingGateway is a loopback AI gateway that runs a request as Portkey's
// and Helicone's gateways do, on the model and max_tokens their headers
// may set in place of the body's, and bills what it ran at prices.
type billingGateway struct {
	srv    *httptest.Server
	hits   atomic.Int64
	billed atomic.Int64 // Money
}

func newBillingGateway(t *testing.T, prices PriceTable) *billingGateway {
	t.Helper()
	g := &billingGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if json.Unmarshal(raw, &body) != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		// Portkey: an azure-openai provider runs the deployment named.
		if r.Header.Get("X-Portkey-Provider") == "azure-openai" {
			if d := r.Header.Get("X-Portkey-Azure-Deployment-Id"); d != "" {
				body["model"] = d
			}
		}
		// Portkey: a config's Azure deployment_id, or its override_params.
		var config map[string]any
		if json.Unmarshal([]byte(r.Header.Get("X-Portkey-Config")), &config) == nil {
			if d, ok := config["deployment_id"].(string); ok {
				body["model"] = d
			}
		}
		// Helicone: the first fallback's bodyKeyOverride.
		var fallbacks []map[string]any
		if json.Unmarshal([]byte(r.Header.Get("Helicone-Fallbacks")), &fallbacks) == nil && len(fallbacks) > 0 {
			if o, ok := fallbacks[0]["bodyKeyOverride"].(map[string]any); ok {
				for k, v := range o {
					body[k] = v
				}
			}
		}
		model, _ := body["model"].(string)
		maxTokens, _ := body["max_tokens"].(float64)
		p, ok := prices[model]
		if !ok {
			http.Error(w, "no such model", http.StatusNotFound)
			return
		}
		prompt, completion := int64(len(raw)), int64(maxTokens)
		g.billed.Add(int64((Money(prompt)*p.Input + Money(completion)*p.Output) / 1_000_000))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, model, prompt, completion)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// Was a bug: gateways run a request on a model, or with a max_tokens, that
// a header names in place of the body's: Portkey on the Azure deployment
// that x-portkey-azure-deployment-id names (with x-portkey-provider:
// azure-openai), or a config's deployment_id; Helicone with a fallback's
// bodyKeyOverride (Helicone-Fallbacks). The Budget priced the body's
// model, and the gateway billed the dear one, past the Limit. Such
// requests are now refused, unsent; those headers that change nothing the
// bill depends on pass.
func TestBudgetRefusesGatewayHeadersThatRunAnotherModel(t *testing.T) {
	prices := PriceTable{
		"cheap": {Input: Dollar, Output: 2 * Dollar},
		"dear":  {Input: 1000 * Dollar, Output: 1000 * Dollar},
	}
	const limit = Cent
	g := newBillingGateway(t, prices)
	b := newTestBudget(t, BudgetConfig{Limit: limit, Prices: prices})
	base := g.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, b)}
	sdk := false // send an SDK's dozen headers too: more than absentKeys ranges over
	send := func(header ...string) error {
		req, err := http.NewRequest(http.MethodPost, g.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("cheap", 100)))
		require.NoError(t, err)
		if sdk {
			for i := range 12 {
				req.Header.Set(fmt.Sprintf("X-Stainless-Header-%d", i), "v")
			}
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}

	refused := [][]string{
		{"X-Portkey-Provider", "azure-openai", "X-Portkey-Azure-Deployment-Id", "dear"},
		{"X-Portkey-Provider", " Azure-OpenAI ", "X-Portkey-Azure-Deployment-Id", "dear"},
		{"X-Portkey-Config", `{"provider":"azure-openai","resource_name":"r","deployment_id":"dear"}`},
		{"X-Portkey-Config", `{"strategy":{"mode":"fallback"},"targets":[{"provider":"openai"},{"provider":"azure-openai","deploymentId":"dear"}]}`},
		{"Helicone-Fallbacks", `[{"target-url":"https://api.openai.com","headers":{},"onCodes":[500],"bodyKeyOverride":{"model":"dear"}}]`},
		{"Helicone-Fallbacks", `[{"target-url":"https://a","headers":{},"onCodes":[500]},{"target-url":"https://b","headers":{},"onCodes":[500],"bodyKeyOverride":{"max_tokens":100000}}]`},
		{"Helicone-Fallbacks", `not json`},
	}
	for _, sdk = range []bool{false, true} {
		for _, header := range refused {
			err := send(header...)
			require.ErrorIs(t, err, ErrUnknownModel, header, "with an SDK's headers: %v", sdk)
			assert.ErrorContains(t, err, strings.ToLower(header[len(header)-2]), header)
		}
	}
	assert.Zero(t, g.hits.Load(), "refused unsent")
	assert.LessOrEqual(t, g.billed.Load(), int64(limit), "billed past the Limit")

	for _, header := range [][]string{
		{"X-Portkey-Provider", "openai", "X-Portkey-Azure-Deployment-Id", "dear"}, // read for azure-openai alone
		{"X-Portkey-Provider", "azure-openai", "X-Portkey-Azure-Deployment-Id", " "},
		{"Helicone-Fallbacks", `[{"target-url":"https://api.openai.com","headers":{},"onCodes":[500]}]`},
		{"Helicone-Fallbacks", ` `},
	} {
		require.NoError(t, send(header...), header)
	}
	assert.EqualValues(t, 4, g.hits.Load())
	assert.LessOrEqual(t, g.billed.Load(), int64(limit))
}
