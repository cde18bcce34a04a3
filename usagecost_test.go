package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// OpenRouter says in usage.cost what it billed the answer, in dollars (its
// credits): the provider it routed to (an open model's providers each
// price it), a plugin's fees, all in. The Budget priced the answer at the
// table's prices alone, below that bill when the route cost more; it now
// charges at least usage.cost.
func TestBudgetChargesAtLeastTheCostTheAnswerReports(t *testing.T) {
	prices := PriceTable{"deepseek/deepseek-chat": {Input: 28 * Cent, Output: 42 * Cent}}
	for _, tt := range []struct {
		name, cost string
		billed     Money
	}{
		{"a fraction of a dollar", "0.0125", 12_500_000},
		{"an exponent, as JavaScript writes a small one", "1.25e-2", 12_500_000},
		{"whole dollars", "2", 2 * Dollar},
		{"below a micro-dollar: the tokens cost more", "1e-40", 9800},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
					usage := `{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30,"cost":` + tt.cost + `,"is_byok":false}`
					if stream {
						w.Header().Set("Content-Type", "text/event-stream")
						fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n"+
							"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":"+usage+"}\n\ndata: [DONE]\n\n")
						return
					}
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprint(w, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":`+usage+`}`)
				})
				var got Settlement
				b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { got = s }})
				body := `{"model":"deepseek/deepseek-chat","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
				if stream {
					body = strings.Replace(body, `"max_tokens"`, `"stream":true,"max_tokens"`, 1)
				}
				readThrough(t, api, b, "/v1/chat/completions", body)
				require.True(t, got.UsageKnown, "stream %v", stream)
				assert.Equal(t, tt.billed, got.Charged, "stream %v", stream)
			}
		})
	}
}

// A cost below what the tokens cost at the table's prices changes nothing,
// and one that is not a number that is not negative is not read: the
// tokens are charged as before.
func TestBudgetChargesTheTokensWhenTheReportedCostIsLowerOrUnread(t *testing.T) {
	prices := PriceTable{"m": {Input: Dollar, Output: 2 * Dollar}}
	tokens := (20*Dollar + 10*2*Dollar) / 1_000_000
	for _, cost := range []string{"0.00001", "0", "null", `"0.5"`, "-1", "{}", "[]", "true"} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":10,"cost":`+cost+`}}`)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { got = s }})
		readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
		assert.True(t, got.UsageKnown, "cost %s", cost)
		assert.Equal(t, tokens, got.Charged, "cost %s", cost)
	}
}

// The cost is read as the reference decoder reads it, whatever its form.
func TestUsageCostReadsAsEncodingJSON(t *testing.T) {
	for _, cost := range []string{"0", "0.0", "0.000001", "0.0000001", "0.0000015", "12.5", "999.999999", "1000",
		"1000.000001", "1e3", "1E-7", "1.5e+2", "1e-40", "1e400", "123456789012345678901234567890", "-0", "-1", "null",
		`"1"`, "true", "{}", "[1]"} {
		v := []byte(`{"prompt_tokens":1,"completion_tokens":1,"cost":` + cost + `}`)
		want, ok := goUsageReading(v)
		require.True(t, ok, cost)
		var r usageReadings
		r.add(v)
		got, ok := r.get()
		require.True(t, ok, cost)
		assert.Equal(t, want.get(usageCost), got.get(usageCost), cost)
		assert.Equal(t, want.has(usageCost), got.has(usageCost), cost)
	}
}
