package httpguard

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Responses-format usage (input_tokens_details) that also holds
// Anthropic's cache counts (cache_read_input_tokens,
// cache_creation_input_tokens: a relay serving Claude whose usage type has
// both) is read in both formats, the dearer side, as a chat usage with
// Anthropic's keys is. It was read as the Responses API's alone: the
// cache reads and writes, which Anthropic's input_tokens leaves out,
// were dropped, and 8,010 input tokens billed were charged as 10.
func TestBudgetResponsesUsageWithAnthropicCacheCountsIsReadBothWays(t *testing.T) {
	const usage = `{"input_tokens":10,"cache_read_input_tokens":5000,"cache_creation_input_tokens":3000,"output_tokens":50,` +
		`"input_tokens_details":{"cached_tokens":0}}`
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"resp_1","object":"response","status":"completed","model":"claude-sonnet-4-5","output":[],"usage":`+usage+`}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnetLong}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/responses", `{"model":"claude-sonnet-4-5","max_output_tokens":100,"input":"hello"}`)
	require.True(t, got.UsageKnown)
	anthropic := sonnetLong.Cost(Usage{InputTokens: 8010, CachedInputTokens: 5000, CacheWriteInputTokens: 3000, OutputTokens: 50})
	assert.GreaterOrEqual(t, got.Charged, anthropic, "Anthropic's reading: %+v", got.Usage)
}
