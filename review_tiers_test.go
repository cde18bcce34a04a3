package httpguard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gpt41Ultrafast is six times gpt-4.1's standard prices, as OpenAI bills
// its Ultrafast mode.
var gpt41Ultrafast = Price{Input: 12 * Dollar, CachedInput: 3 * Dollar, Output: 48 * Dollar}

// ultrafastTier bills "service_tier": "ultrafast" (OpenAI's Ultrafast
// mode, https://developers.openai.com/api/docs/guides/ultrafast-mode) at
// gpt41Ultrafast.
var ultrafastTier = map[string]Price{"ultrafast": gpt41Ultrafast}

// OpenAI bills "service_tier": "ultrafast" at six times standard prices: a
// service tier the Budget does not know is priced by the table's entry
// for it, not as standard.
func TestBudgetLimitHoldsAgainstUltrafastBills(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billTiers(&billed, ultrafastTier))
	b := newTestBudget(t, BudgetConfig{Limit: 20 * Cent, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority,
		"gpt-4.1@ultrafast": gpt41Ultrafast}})
	var bodies []string
	for i := range 20 {
		bodies = append(bodies, tierBody([]string{``, `"service_tier":"ultrafast",`}[i%2]))
	}
	sendUntilTheLimit(t, api, b, "/v1/chat/completions", bodies, &billed)
}

func TestBudgetPricesAnUnknownServiceTierByItsOwnEntry(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billTiers(&billed, ultrafastTier))
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"]}})
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(tierBody(`"service_tier":"ultrafast",`)))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, `service_tier "ultrafast"`)
	assert.ErrorContains(t, err, `add a "gpt-4.1@ultrafast" entry`)
	assert.Zero(t, api.hits.Load(), "nothing was sent")

	var got Settlement
	b = newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1@ultrafast": gpt41Ultrafast},
		OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", tierBody(`"service_tier":"ultrafast",`))
	require.True(t, got.UsageKnown)
	assert.Equal(t, "gpt-4.1@ultrafast", got.PricedAs)
	assert.Equal(t, Money(billed.Load()), got.Charged)
}

// opus46 is Claude Opus 4.6's price, and opus46US its price with
// "inference_geo": "us" (US-only inference), which Anthropic bills at 1.1
// times (https://platform.claude.com/docs/en/build-with-claude/data-residency).
var (
	opus46   = Price{Input: 5 * Dollar, CachedInput: 50 * Cent, CacheWrite: 625 * Cent, Output: 25 * Dollar}
	opus46US = Price{Input: 550 * Cent, CachedInput: 55 * Cent, CacheWrite: 6875 * Cent / 10, Output: 2750 * Cent}
)

// billGeo answers as Anthropic does (streaming when asked) and adds to
// billed what it bills: a request that runs in the US at 1.1 times Opus
// 4.6's prices. A request runs where its "inference_geo" says, else in
// dflt, the workspace's default geo.
func billGeo(billed *atomic.Int64, dflt string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			Geo       *string `json:"inference_geo"`
			MaxTokens int64   `json:"max_tokens"`
			Stream    bool    `json:"stream"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		geo := dflt
		if r.Geo != nil {
			geo = *r.Geo
		}
		price := opus46
		if geo == "us" {
			price = opus46US
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: r.MaxTokens}
		billed.Add(int64(price.Cost(u)))
		if r.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"+
				"\"model\":\"claude-opus-4-6\",\"usage\":{\"input_tokens\":%d,\"output_tokens\":1,\"service_tier\":\"standard\",\"inference_geo\":%q}}}\n\n", u.InputTokens, geo)
			fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n", u.OutputTokens)
			fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"model":"claude-opus-4-6",`+
			`"usage":{"input_tokens":%d,"output_tokens":%d,"service_tier":"standard","inference_geo":%q}}`, u.InputTokens, u.OutputTokens, geo)
	}
}

func geoBody(geo string) string {
	return `{"model":"claude-opus-4-6",` + geo + `"max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 2000) + `"}]}`
}

// Anthropic bills US-only inference ("inference_geo": "us") at 1.1 times
// the model's prices: it is priced by the table's "model@us" entry.
func TestBudgetLimitHoldsAgainstUSInferenceBills(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billGeo(&billed, "global"))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-opus-4-6": opus46, "claude-opus-4-6@us": opus46US}})
	var bodies []string
	for i := range 40 {
		bodies = append(bodies, geoBody([]string{`"inference_geo":"global",`, `"inference_geo":"us",`}[i%2]))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}

func TestBudgetRefusesUSInferenceItHasNoPriceFor(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billGeo(&billed, "global"))
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"claude-opus-4-6": opus46, "claude-opus-4-6@fast": opus46}})
	for _, geo := range []string{`"inference_geo":"us",`, `"speed":"fast","inference_geo":"us",`} {
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(geoBody(geo)))
		require.ErrorIs(t, err, ErrUnknownModel)
		assert.ErrorContains(t, err, `inference_geo "us"`)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	for _, geo := range []string{``, `"inference_geo":null,`, `"inference_geo":"global",`} {
		readThrough(t, api, b, "/v1/messages", geoBody(geo))
	}
	assert.Equal(t, Money(billed.Load()), b.Spent())
}

// The tiers billed at standard prices or less pass as standard, with no
// entry of their own.
func TestBudgetPricesStandardServiceTiersAsStandard(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billTiers(&billed, ultrafastTier))
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"]}})
	for _, tier := range []string{"auto", "default", "standard", "standard_only", "on_demand", "flex", "scale"} {
		readThrough(t, api, b, "/v1/chat/completions", tierBody(`"service_tier":"`+tier+`",`))
	}
	assert.Equal(t, Money(billed.Load()), b.Spent())
}
