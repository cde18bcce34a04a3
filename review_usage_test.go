package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// billResponsesCacheWrites answers as a Responses API serving Claude
// does (Azure AI Foundry's usage names input_tokens_details.cache_write_tokens):
// input_tokens counts the whole prompt, of which cache reads and cache
// writes, and adds to billed what Claude's prices bill: the writes at
// cache_write.
func billResponsesCacheWrites(billed *atomic.Int64, reads, writes int64) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		cr, _ := parseChatRequest(body)
		u := Usage{InputTokens: int64(len(body)), CachedInputTokens: reads, CacheWriteInputTokens: writes, OutputTokens: cr.MaxOutput}
		billed.Add(int64(sonnetLong.Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"resp_1","object":"response","status":"completed","output":[],`+
			`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d},"output_tokens":%d,"total_tokens":%d}}`,
			u.InputTokens, reads, writes, u.OutputTokens, u.InputTokens+u.OutputTokens)
	}
}

func TestBudgetChargesResponsesCacheWritesAtTheCacheWritePrice(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billResponsesCacheWrites(&billed, 2_000, 40_000))
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnetLong}, OnSettle: func(s Settlement) { got = s }})
	body := `{"model":"claude-sonnet-4-5","max_output_tokens":1000,"input":"` + strings.Repeat("w", 50_000) + `"}`
	readThrough(t, api, b, "/v1/responses", body)
	require.True(t, got.UsageKnown)
	assert.Equal(t, int64(40_000), got.Usage.CacheWriteInputTokens)
	assert.Equal(t, Money(billed.Load()), got.Charged)
}
