package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fallbackServed is an Anthropic answer that claude-fable-5 refused and
// its fallback served, writing 32,000 tokens; usage.iterations lists both
// attempts, as the server-side fallback reports them.
const fallbackServed = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8",` +
	`"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":10,"output_tokens":32000,"iterations":[` +
	`{"type":"message","model":"claude-fable-5","input_tokens":10,"output_tokens":1},` +
	`{"type":"fallback_message","model":"claude-opus-4-8","input_tokens":10,"output_tokens":32000}]}}`

// Was a bug: a fallback entry of anthropic-sdk-go's BetaMessageNewParams
// runs with its own max_tokens, in place of the request's; the Budget
// reserved the request's 64 tokens, sent it under a $0.50 Limit, and was
// charged $0.80 for the 32,000 its fallback wrote.
func TestAnthropicFallbackWithItsOwnMaxTokensIsReservedAtThem(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) { reply(w, http.StatusOK, fallbackServed) })
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"claude-fable-5": {"input": 5, "output": 25}, "claude-opus-4-8": {"input": 5, "output": 25}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollars(0.50), Prices: prices})
	require.NoError(t, err)
	params := anthropic.BetaMessageNewParams{
		Model: "claude-fable-5", MaxTokens: 64,
		Messages:  []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("hello"))},
		Fallbacks: anthropic.BetaFallbacksParamUnion{OfBetaFallbackArray: []anthropic.BetaFallbackParam{{Model: "claude-opus-4-8", MaxTokens: anthropic.Int(32_000)}}},
	}

	_, err = newAnthropic(a, guardedClient(t, b), option.WithMaxRetries(0)).Beta.Messages.New(context.Background(), params)

	var refused *httpguard.BudgetError
	require.ErrorAs(t, err, &refused, "32,000 tokens of output ($0.80) do not fit $0.50")
	assert.EqualValues(t, 32_000, refused.OutputTokens)
	assert.Zero(t, a.hits.Load())
	assert.LessOrEqual(t, b.Spent(), b.Limit())
}
