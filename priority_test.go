package httpguard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gpt41Priority is gpt-4.1's Priority processing price: $3.50 in, $0.875
// cached, $14 out per million, against $2, $0.50 and $8.
var gpt41Priority = Price{Input: 350 * Cent, CachedInput: 875 * Cent / 10, Output: 14 * Dollar}

// priorityTier bills "service_tier": "priority" at gpt41Priority.
var priorityTier = map[string]Price{"priority": gpt41Priority}

// billTiers answers as OpenAI does, with usage of the request's prompt
// bound and max_tokens, and adds to billed what OpenAI bills for it: at
// the price tiers gives the request's service_tier (as encoding/json reads
// the body), else at gpt-4.1's standard prices.
func billTiers(billed *atomic.Int64, tiers map[string]Price) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			ServiceTier string `json:"service_tier"`
			MaxTokens   int64  `json:"max_tokens"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		price, tier := ExamplePrices()["gpt-4.1"], "default"
		if p, ok := tiers[r.ServiceTier]; ok {
			price, tier = p, r.ServiceTier
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: r.MaxTokens}
		billed.Add(int64(price.Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","model":"gpt-4.1-2025-04-14","service_tier":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, tier, u.InputTokens, u.OutputTokens)
	}
}

func tierBody(tier string) string {
	return `{"model":"gpt-4.1",` + tier + `"max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 2000) + `"}]}`
}

func TestBudgetChargesAPriorityRequestAtPriorityPrices(t *testing.T) {
	prices := PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}
	for _, c := range []struct {
		tier     string
		priority bool
	}{
		{`"service_tier":"priority",`, true},
		{`"service_tier":"priorit\u0079",`, true},
		{`"service_tier":"auto",`, false},
		{`"service_tier":"default",`, false},
		{`"service_tier":"flex",`, false},
		{`"service_tier":null,`, false},
		{``, false},
	} {
		t.Run(c.tier, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, billTiers(&billed, priorityTier))
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", tierBody(c.tier))
			require.True(t, got.UsageKnown)
			assert.Equal(t, Money(billed.Load()), got.Charged)
			if c.priority {
				assert.Equal(t, "gpt-4.1@priority", got.PricedAs)
			}
		})
	}
}

func TestBudgetRefusesAPriorityRequestItHasNoPriceFor(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billTiers(&billed, priorityTier))
	for _, prices := range []PriceTable{
		{"gpt-4.1": ExamplePrices()["gpt-4.1"]},
		{FallbackModel: ExamplePrices()["gpt-4.1"]}, // "*" prices standard requests only
		{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4o" + PriorityTier: gpt41Priority},
		// "*@priority" prices the models the table does not list: a listed
		// model's standard price says nothing of its Priority price.
		{"gpt-4.1": ExamplePrices()["gpt-4.1"], FallbackModel + PriorityTier: Price{Input: Cent, Output: Cent}},
	} {
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices})
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(tierBody(`"service_tier":"priority",`)))
		require.ErrorIs(t, err, ErrUnknownModel)
		assert.ErrorContains(t, err, `add a "gpt-4.1@priority" entry`)
		assert.ErrorContains(t, err, `("*@priority" prices every unlisted model's)`)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")

	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{FallbackModel + PriorityTier: gpt41Priority}})
	readThrough(t, api, b, "/v1/chat/completions", tierBody(`"service_tier":"priority",`))
	assert.Equal(t, Money(billed.Load()), b.Spent(), "\"*@priority\" prices every unlisted model's Priority requests")
}

func TestBudgetRefusesAServiceTierThatIsNotAString(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"]}})
	for _, tier := range []string{`"service_tier":1,`, `"service_tier":["priority"],`, `"service_tier":"default","SERVICE_TIER":"priority",`} {
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(tierBody(tier)))
		require.ErrorIs(t, err, ErrUnknownModel, tier)
	}
	assert.Zero(t, api.hits.Load())
}

// The promise: a mix of standard and Priority requests is never billed
// past the Limit.
func TestBudgetLimitHoldsAgainstPriorityBills(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billTiers(&billed, priorityTier))
	b := newTestBudget(t, BudgetConfig{Limit: 20 * Cent, Prices: PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}})
	var bodies []string
	for i := range 20 {
		bodies = append(bodies, tierBody([]string{``, `"service_tier":"priority",`}[i%2]))
	}
	sendUntilTheLimit(t, api, b, "/v1/chat/completions", bodies, &billed)
}

// Vertex AI runs a request at Priority PayGo, billed above standard
// prices, when a header asks for it; neither the body nor the answer in
// OpenAI's format says so. Such a request is priced by the model's
// Priority entry, and refused without one. Found by an adversarial hunt:
// priced as standard, it was billed 1.8 times its Limit.
func TestBudgetPricesVertexPriorityPayGoAtPriority(t *testing.T) {
	std := Price{Input: 125 * Cent, Output: 10 * Dollar}
	priority := Price{Input: 225 * Cent, Output: 18 * Dollar}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		u := Usage{InputTokens: int64(len(b)), OutputTokens: 2000}
		p := std
		if strings.EqualFold(r.Header.Get("X-Vertex-AI-LLM-Shared-Request-Type"), "priority") {
			p = priority
		}
		billed.Add(int64(p.Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","model":"gemini-2.5-pro","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, u.InputTokens, u.OutputTokens)
	})
	body := `{"model":"gemini-2.5-pro","max_tokens":2000,"messages":[{"role":"user","content":"Summarize the Gettysburg Address."}]}`
	send := func(b *Budget, value string) error {
		req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-Vertex-AI-LLM-Shared-Request-Type", value)
		resp, err := api.client(t, b).Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}

	for _, value := range []string{"priority", " Priority"} {
		billed.Store(0)
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, OnSettle: func(s Settlement) { got = s },
			Prices: PriceTable{"gemini-2.5-pro": std, "gemini-2.5-pro" + PriorityTier: priority}})
		require.NoError(t, send(b, value))
		assert.Equal(t, "gemini-2.5-pro@priority", got.PricedAs, value)
		assert.Equal(t, Money(billed.Load()), got.Charged, value)
	}

	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"gemini-2.5-pro": std}})
	err := send(b, "priority")
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, `asks for X-Vertex-AI-LLM-Shared-Request-Type: priority`)
	assert.ErrorContains(t, err, `add a "gemini-2.5-pro@priority" entry`)

	billed.Store(0)
	var got Settlement
	b = newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, OnSettle: func(s Settlement) { got = s }, Prices: PriceTable{"gemini-2.5-pro": std}})
	require.NoError(t, send(b, "flex")) // Flex PayGo: below standard prices
	assert.Equal(t, Money(billed.Load()), got.Charged)
}
