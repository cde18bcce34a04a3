package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// DeepSeek bills prompt_cache_miss_tokens at the input price and
// prompt_cache_hit_tokens at the cached price; its prompt_tokens is their
// sum. A usage whose hits and misses add up to more than its prompt_tokens
// (a relay that rewrote prompt_tokens, or counts it otherwise) does not add
// up: the misses were ignored, and the answer was charged prompt_tokens
// alone, below what DeepSeek billed and below the reservation. Such a
// usage is read with the hits and misses as its input, and not trusted.
func TestUsageReadsDeepSeekCacheMissesAbovePromptTokens(t *testing.T) {
	for _, tt := range []struct {
		name, usage string
		want        Usage
		ok          bool
	}{
		{"hits and misses add up", `{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":40}`,
			Usage{InputTokens: 100, CachedInputTokens: 60, OutputTokens: 5}, true},
		{"hits and misses within the prompt", `{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":10,"prompt_cache_miss_tokens":40}`,
			Usage{InputTokens: 100, CachedInputTokens: 10, OutputTokens: 5}, true},
		{"misses above the prompt", `{"prompt_tokens":10,"completion_tokens":5,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":5000}`,
			Usage{InputTokens: 5000, OutputTokens: 5}, false},
		{"hits and misses above the prompt", `{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":4000}`,
			Usage{InputTokens: 4060, CachedInputTokens: 60, OutputTokens: 5}, false},
		{"misses without a prompt", `{"completion_tokens":5,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":4000}`,
			Usage{InputTokens: 4060, CachedInputTokens: 60, OutputTokens: 5}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			readsChatUsageEveryWay(t, `{"object":"chat.completion","choices":[],"usage":`+tt.usage+`}`, tt.want, tt.ok)
		})
	}
}

// Against a loopback server, such an answer is charged at least what
// DeepSeek billed: the misses at the input price.
func TestBudgetChargesDeepSeekCacheMissesAbovePromptTokens(t *testing.T) {
	prices := PriceTable{"deepseek-chat": {Input: 28 * Cent, CachedInput: 28 * Cent / 10, Output: 42 * Cent}}
	body := `{"model":"deepseek-chat","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a ", 3000) + `"}]}`
	miss := int64(len(body)) // a prompt as long as its bytes: the most the reservation holds
	billed := (Money(miss)*prices["deepseek-chat"].Input + 5*prices["deepseek-chat"].Output) / 1_000_000
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],`+
			`"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":%d}}`, miss)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", body)
	require.NotZero(t, got.Charged)
	assert.GreaterOrEqual(t, got.Charged, billed, "charged %v for usage %+v; DeepSeek billed %v", got.Charged, got.Usage, billed)
}
