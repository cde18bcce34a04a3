package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A chat usage counts cache reads within prompt_tokens (LiteLLM's
// cache_read_input_tokens beside them, as OpenAI's cached_tokens), so
// reads within it are charged as input, the dearer side. Reads above
// prompt_tokens cannot be a part of it: the relay counted prompt_tokens as
// Anthropic counts input_tokens, without the reads (or the writes). They
// were ignored, and the answer charged its prompt_tokens alone; such a
// usage is not trusted now, and charged, when that costs more than the
// reservation, as Anthropic's would be: the reads, the writes and
// prompt_tokens.
func TestUsageReadsCacheReadsAboveAChatPromptAsAnthropicsCounts(t *testing.T) {
	for _, tt := range []struct {
		name, usage string
		want        Usage
		ok          bool
	}{
		{"reads within the prompt, charged as input", `{"prompt_tokens":60000,"completion_tokens":100,"cache_read_input_tokens":50000}`,
			Usage{InputTokens: 60_000, OutputTokens: 100}, true},
		{"reads above the prompt", `{"prompt_tokens":10,"completion_tokens":100,"cache_read_input_tokens":50000}`,
			Usage{InputTokens: 50_010, CachedInputTokens: 50_000, OutputTokens: 100}, false},
		{"reads above the prompt, and writes", `{"prompt_tokens":10,"completion_tokens":100,"cache_read_input_tokens":50000,"cache_creation_input_tokens":5}`,
			Usage{InputTokens: 50_015, CachedInputTokens: 50_000, CacheWriteInputTokens: 5, OutputTokens: 100}, false},
		{"reads above the prompt, and a cached part of it", `{"prompt_tokens":10,"completion_tokens":100,"cache_read_input_tokens":50000,"prompt_tokens_details":{"cached_tokens":4}}`,
			Usage{InputTokens: 50_010, CachedInputTokens: 50_000, OutputTokens: 100}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			readsChatUsageEveryWay(t, `{"object":"chat.completion","choices":[],"usage":`+tt.usage+`}`, tt.want, tt.ok)
		})
	}
}

// The Budget charges such an answer at least what those counts cost when
// it is more than the reservation (reads of input the request holds by
// reference, StoredInputReserve's).
func TestBudgetChargesCacheReadsAboveAChatPrompt(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"] // $3 in, $0.30 cache reads, $15 out
	billed := (10*sonnet.Input + 500_000*sonnet.CachedInput + 100*sonnet.Output) / 1_000_000
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":100,"total_tokens":110,"cache_read_input_tokens":500000}}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`)
	require.NotZero(t, got.Charged)
	assert.GreaterOrEqual(t, got.Charged, billed, "charged %v for usage %+v; the provider billed %v", got.Charged, got.Usage, billed)
}

// readsChatUsageEveryWay checks that a chat completion's body is read as
// want, trusted or not as ok says, whole, a byte at a time, and as the
// last chunk of a stream.
func readsChatUsageEveryWay(t *testing.T, body string, want Usage, ok bool) {
	t.Helper()
	for _, chunk := range []int{len(body), 1} {
		_, rep := observe(t, "application/json", chunked([]byte(body), chunk))
		assert.Equal(t, ok, rep.ok)
		assert.Equal(t, want, rep.u)
	}
	stream := "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}],\"usage\":null}\n\n" +
		"data: " + body + "\n\ndata: [DONE]\n\n"
	_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
	assert.Equal(t, ok, rep.ok)
	assert.Equal(t, want, rep.u)
}
