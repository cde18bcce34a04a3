package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Anthropic splits a usage's cache writes by how long they are kept:
// cache_creation.ephemeral_5m_input_tokens and ephemeral_1h_input_tokens,
// whose sum is cache_creation_input_tokens. A usage that names the split
// but not the total (a relay that drops the total, as it is the sum of
// the split) still wrote those tokens, which Anthropic's input_tokens
// leaves out: read from the total alone, the five-minute writes were not
// charged at all.
func TestUsageReadsCacheWritesFromTheirSplitWithoutTheTotal(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		want                    Usage
	}{
		{"anthropic json, five-minute writes only", "application/json",
			`{"type":"message","usage":{"input_tokens":10,"cache_read_input_tokens":0,` +
				`"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0},"output_tokens":5}}`,
			Usage{InputTokens: 1010, CacheWriteInputTokens: 1000, OutputTokens: 5}},
		{"anthropic json, both kinds", "application/json",
			`{"type":"message","usage":{"input_tokens":10,` +
				`"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":500},"output_tokens":5}}`,
			Usage{InputTokens: 1510, CacheWriteInputTokens: 1500, CacheWrite1hInputTokens: 500, OutputTokens: 5}},
		{"anthropic json, a total below the split", "application/json",
			`{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":600,` +
				`"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":500},"output_tokens":5}}`,
			Usage{InputTokens: 1510, CacheWriteInputTokens: 1500, CacheWrite1hInputTokens: 500, OutputTokens: 5}},
		{"anthropic json, the total as sent", "application/json",
			`{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":1500,` +
				`"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":500},"output_tokens":5}}`,
			Usage{InputTokens: 1510, CacheWriteInputTokens: 1500, CacheWrite1hInputTokens: 500, OutputTokens: 5}},
		{"anthropic stream", "text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10," +
				"\"cache_creation\":{\"ephemeral_5m_input_tokens\":1000,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1}}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			Usage{InputTokens: 1010, CacheWriteInputTokens: 1000, OutputTokens: 5}},
		{"relay's chat usage, the writes in prompt_tokens", "application/json",
			`{"object":"chat.completion","usage":{"prompt_tokens":1010,"completion_tokens":5,` +
				`"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0}}}`,
			Usage{InputTokens: 1010, CacheWriteInputTokens: 1000, OutputTokens: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rep := observe(t, tt.contentType, strings.NewReader(tt.body))
			assert.True(t, rep.ok)
			assert.Equal(t, tt.want, rep.u)
		})
	}
}

// The Budget charges the five-minute cache writes such a usage names: at
// the cache-write price, 1.25 times the input price.
func TestBudgetChargesCacheWritesNamedOnlyByTheirSplit(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $3.75 cache writes, $15 out per million
	billed := (10*sonnet.Input + 16_000*sonnet.CacheWrite + 100*sonnet.Output) / 1_000_000
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":10,`+
			`"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":16000,"ephemeral_1h_input_tokens":0},"output_tokens":100}}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"`+
		strings.Repeat("x", 80_000)+`"}]}`)
	require.True(t, got.UsageKnown)
	assert.GreaterOrEqual(t, b.Spent(), billed, "charged %v for usage %+v; the provider billed %v", got.Charged, got.Usage, billed)
}
