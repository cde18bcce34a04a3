package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mistralModeration is Mistral's moderation model's price: $0.10 per
// million input tokens, billed at /v1/moderations (and /v1/chat/moderations).
var mistralModeration = Price{Input: 10 * Cent, Output: 0}

// Mistral bills its moderation endpoint, /v1/moderations, by the tokens of
// its input (relays serving it bill it too): only OpenAI's moderations are
// free. A table that prices the model is no use if the Budget lets every
// moderation pass unpriced.
func TestBudgetLimitHoldsAgainstBilledModerations(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		billed.Add(int64(mistralModeration.Cost(Usage{InputTokens: int64(len(body))})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"mod-1","model":"mistral-moderation-latest","results":[{"categories":{},"category_scores":{}}],"usage":{"prompt_tokens":%d,"completion_tokens":0,"total_tokens":%d}}`, len(body), len(body))
	})
	body := `{"model":"mistral-moderation-latest","input":["` + strings.Repeat("w", 30_000) + `"]}`
	b := newTestBudget(t, BudgetConfig{Limit: mistralModeration.Cost(Usage{InputTokens: int64(len(body))}) * 5 / 2,
		Prices: PriceTable{"mistral-moderation-latest": mistralModeration}})
	client := api.client(t, b)
	for range 10 {
		resp, err := client.Post(api.srv.URL+"/v1/moderations", "application/json", strings.NewReader(body))
		if err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
}
