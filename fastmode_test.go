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

// Anthropic's fast mode ("speed": "fast", beta header
// fast-mode-2026-02-01) bills Claude Opus 4.6 at 6 times its standard
// prices ($30 / $150 per million, against $5 / $25), and later Opus models
// at twice theirs; OpenRouter takes "speed": "fast" and "service_tier":
// "fast" too. A fast request is priced by the table's "model@fast" entry
// (FastTier), and refused, nothing sent, when there is none: the Budget
// used to price it at the model's standard price, and against a $0.20
// Limit the provider billed $1.10.
func TestBudgetLimitHoldsAgainstFastModeBills(t *testing.T) {
	opus := Price{Input: 5 * Dollar, Output: 25 * Dollar}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			Speed       string `json:"speed"`
			ServiceTier string `json:"service_tier"`
			MaxTokens   int64  `json:"max_tokens"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: r.MaxTokens}
		cost, speed := opus.Cost(u), "standard"
		if r.Speed == "fast" || r.ServiceTier == "fast" {
			cost, speed = 6*cost, "fast"
		}
		billed.Add(int64(cost))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","role":"assistant","model":"claude-opus-4-6","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"end_turn","usage":{"input_tokens":%d,"output_tokens":%d,"speed":%q}}`, u.InputTokens, u.OutputTokens, speed)
	})
	body := func(fast string) string {
		return `{"model":"claude-opus-4-6",` + fast + `"max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 200) + `"}]}`
	}
	for _, fast := range []string{`"speed":"fast",`, `"service_tier":"fast",`, `"speed":"fastest",`} {
		b := newTestBudget(t, BudgetConfig{Limit: 20 * Cent, Prices: PriceTable{"claude-opus-4-6": opus}})
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body(fast)))
		require.ErrorIs(t, err, ErrUnknownModel, fast)
		assert.ErrorContains(t, err, `add a "claude-opus-4-6@fast" entry`)
	}
	require.Zero(t, api.hits.Load(), "nothing was sent")

	fastOpus := Price{Input: 30 * Dollar, Output: 150 * Dollar}
	b := newTestBudget(t, BudgetConfig{Limit: 20 * Cent, Prices: PriceTable{"claude-opus-4-6": opus, "claude-opus-4-6" + FastTier: fastOpus}})
	var bodies []string
	for i := range 20 {
		bodies = append(bodies, body([]string{``, `"speed":"fast",`, `"speed":"standard",`, `"service_tier":"fast",`}[i%4]))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}
