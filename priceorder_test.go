package httpguard

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests price answers whose usage the Budget reads two ways (a
// relay's usage type with the keys of two formats, two counts of one
// cached part) with price tables whose prices are not in the usual order:
// a cached input dearer than input, cache writes or audio cheaper than
// text, a long-context price below the base one. The provider billed one
// of the readings: the charge is at least what the dearer costs, whatever
// the order of the prices.

// settleOnce sends body to path through a Budget pricing model "m" at p,
// answered with usage, and returns the settlement.
func settleOnce(t *testing.T, p Price, path, body, usage string) Settlement {
	t.Helper()
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":`+usage+`}`)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, Prices: PriceTable{"m": p}, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, path, body)
	return got
}

const smallChat = `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

// A usage in the OpenAI chat and Anthropic formats at once: the chat
// reading counts 1,000 prompt tokens none cached, the Anthropic one the
// same 1,000 as cache reads. With cache reads dearer than input, the
// Anthropic reading is the dearer; the smaller cached part was charged,
// 1,000 tokens at the input price.
func TestBudgetUsageInBothFormatsWithCachedInputDearerThanInput(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 4 * Dollar, Output: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":1000,"completion_tokens":10,"input_tokens":0,"output_tokens":10,"cache_read_input_tokens":1000}`)
	require.True(t, got.UsageKnown)
	anthropic := p.Cost(Usage{InputTokens: 1000, CachedInputTokens: 1000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, anthropic, "Anthropic's reading: %+v", got.Usage)
}

// The chat reading names 1,000 cache writes (OpenRouter's
// cache_write_tokens), the Anthropic one none: with cache writes cheaper
// than input, the Anthropic reading is the dearer.
func TestBudgetUsageInBothFormatsWithCacheWritesCheaperThanInput(t *testing.T) {
	p := Price{Input: 4 * Dollar, CacheWrite: Dollar, Output: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"cache_write_tokens":1000},"input_tokens":1000,"output_tokens":10}`)
	require.True(t, got.UsageKnown)
	anthropic := p.Cost(Usage{InputTokens: 1000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, anthropic, "Anthropic's reading: %+v", got.Usage)
}

// The chat reading counts its prompt as audio, the Anthropic one as text:
// with audio cheaper than text, the text reading is the dearer.
func TestBudgetUsageInBothFormatsWithAudioCheaperThanText(t *testing.T) {
	p := Price{Input: 4 * Dollar, AudioInput: Dollar, Output: 4 * Dollar, AudioOutput: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"audio_tokens":1000},`+
			`"completion_tokens_details":{"audio_tokens":10},"input_tokens":1000,"output_tokens":10}`)
	require.True(t, got.UsageKnown)
	text := p.Cost(Usage{InputTokens: 1000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, text, "the text reading: %+v", got.Usage)
}

// The chat reading counts 150,000 prompt tokens, under the long-context
// size; the Anthropic one 250,000 (100,000 and 150,000 cache reads), over
// it. With a long-context price below the base one, the chat reading, at
// the base price, may be the dearer: the two read as one are past the
// size, and were charged at the long-context price alone.
func TestBudgetUsageInBothFormatsWithLongContextCheaperThanBase(t *testing.T) {
	p := Price{Input: 4 * Dollar, Output: 4 * Dollar,
		LongContext: &LongContextPrice{Above: 200_000, Price: Price{Input: Dollar, Output: Dollar}}}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":150000,"completion_tokens":10,"input_tokens":100000,"output_tokens":10,"cache_read_input_tokens":150000}`)
	require.True(t, got.UsageKnown)
	chat := p.Cost(Usage{InputTokens: 150_000, OutputTokens: 10})
	anthropic := p.Cost(Usage{InputTokens: 250_000, CachedInputTokens: 150_000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, max(chat, anthropic), "%+v", got.Usage)
}

// A chat usage that counts its cached part twice, as cached_tokens (none)
// and DeepSeek's prompt_cache_hit_tokens (all): with cached input dearer
// than input, the reading of more cached tokens is the dearer.
func TestBudgetTwoCountsOfTheCachedPartWithCachedInputDearerThanInput(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 4 * Dollar, Output: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":1000,"completion_tokens":10,"prompt_cache_hit_tokens":1000,"prompt_tokens_details":{"cached_tokens":0}}`)
	require.True(t, got.UsageKnown)
	hit := p.Cost(Usage{InputTokens: 1000, CachedInputTokens: 1000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, hit, "%+v", got.Usage)
}

// A repeated usage key: encoding/json merges the second object into the
// first (1,000 cached tokens kept), other decoders read the second alone
// (none cached). The answer is not trusted, and charged the dearer of its
// reservation and the readings: with cached input dearer than input, the
// merged reading.
func TestBudgetRepeatedUsageWithCachedInputDearerThanInput(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 4 * Dollar, Output: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":1000}},"usage":{"prompt_tokens":1000,"completion_tokens":10}`)
	require.False(t, got.UsageKnown)
	merged := p.Cost(Usage{InputTokens: 1000, CachedInputTokens: 1000, OutputTokens: 10})
	assert.GreaterOrEqual(t, got.Charged, merged, "%+v", got.Usage)
}

// A usage whose audio tokens do not fit beside its cached ones (100 input
// tokens, 100 cached, 100 audio) says its audio was cached too, without
// saying at what price: cached audio. It was priced as audio alone; with
// a cached input dearer than audio, the reading of those tokens as
// cached input is the dearer.
func TestBudgetCachedAudioWithCachedInputDearerThanAudio(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 4 * Dollar, AudioInput: Dollar, Output: Dollar}
	got := settleOnce(t, p, "/v1/chat/completions", smallChat,
		`{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":100,"audio_tokens":100}}`)
	require.True(t, got.UsageKnown)
	cached := p.Cost(Usage{InputTokens: 100, CachedInputTokens: 100, OutputTokens: 1})
	assert.GreaterOrEqual(t, got.Charged, cached, "%+v", got.Usage)
}
