package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// LiteLLM splits Claude's cache writes in its chat usage's
// prompt_tokens_details.cache_creation_token_details, as Anthropic's
// cache_creation does. A usage that names the split but neither total
// (cache_creation_tokens, cache_creation_input_tokens) still wrote those
// tokens: read from the one-hour part alone, the five-minute writes were
// charged at the input price, 0.25 times it below what was billed.
func TestUsageReadsLiteLLMsCacheWriteSplitWithoutTheTotal(t *testing.T) {
	for _, tt := range []struct {
		name, details string
		want          Usage
	}{
		{"five-minute writes only", `{"cached_tokens":0,"cache_creation_token_details":{"ephemeral_5m_input_tokens":16000}}`,
			Usage{InputTokens: 20_000, CacheWriteInputTokens: 16_000, OutputTokens: 100}},
		{"both kinds", `{"cache_creation_token_details":{"ephemeral_5m_input_tokens":6000,"ephemeral_1h_input_tokens":10000}}`,
			Usage{InputTokens: 20_000, CacheWriteInputTokens: 16_000, CacheWrite1hInputTokens: 10_000, OutputTokens: 100}},
		{"a total below the split", `{"cache_creation_tokens":1000,"cache_creation_token_details":{"ephemeral_5m_input_tokens":6000,"ephemeral_1h_input_tokens":10000}}`,
			Usage{InputTokens: 20_000, CacheWriteInputTokens: 16_000, CacheWrite1hInputTokens: 10_000, OutputTokens: 100}},
		{"the total as LiteLLM sends it", `{"cache_creation_tokens":16000,"cache_creation_token_details":{"ephemeral_5m_input_tokens":6000,"ephemeral_1h_input_tokens":10000}}`,
			Usage{InputTokens: 20_000, CacheWriteInputTokens: 16_000, CacheWrite1hInputTokens: 10_000, OutputTokens: 100}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":20000,"completion_tokens":100,"total_tokens":20100,` +
				`"prompt_tokens_details":` + tt.details + `}}`
			readsChatUsageEveryWay(t, body, tt.want, true)
		})
	}
}

// The Budget charges what such a usage says was written, at the
// cache-write prices.
func TestBudgetChargesLiteLLMsFiveMinuteCacheWritesNamedOnlyByTheirSplit(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $3.75 cache writes, $6 one-hour cache writes, $15 out
	billed := (4_000*sonnet.Input + 6_000*sonnet.CacheWrite + 10_000*sonnet.CacheWrite1h + 100*sonnet.Output) / 1_000_000
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":20000,"completion_tokens":100,"total_tokens":20100,`+
			`"prompt_tokens_details":{"cached_tokens":0,"cache_creation_token_details":{"ephemeral_5m_input_tokens":6000,"ephemeral_1h_input_tokens":10000}}}}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"`+
		strings.Repeat("x", 80_000)+`"}]}`)
	require.True(t, got.UsageKnown)
	assert.GreaterOrEqual(t, got.Charged, billed, "charged %v for usage %+v; the provider billed %v", got.Charged, got.Usage, billed)
}
