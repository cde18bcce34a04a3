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

// threadAPI answers a message thread's turns: the turn that creates it
// with a short usage, each turn that continues it with the 300,000 input
// tokens of the conversation Anthropic holds, as it bills them.
func threadAPI(t *testing.T) *api {
	return newAPI(t, func(w http.ResponseWriter, r *http.Request, n int) {
		usage := `"usage":{"input_tokens":5,"output_tokens":1}`
		if n > 1 {
			usage = `"usage":{"input_tokens":300000,"output_tokens":1}`
		}
		reply(w, http.StatusOK, strings.Replace(anthropicMessage, `"usage":{"input_tokens":5,"output_tokens":1}`, usage, 1))
	})
}

func sendThreadTurns(t *testing.T, a *api, b *httpguard.Budget) error {
	thread := newAnthropic(a, guardedClient(t, b), option.WithMaxRetries(0)).Beta.Messages.NewThread(anthropic.BetaMessageThreadCreateParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64,
		Messages: []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("hello"))},
	})
	_, err := thread.Send(context.Background(), anthropic.BetaMessageThreadSendParams{})
	require.NoError(t, err, "the turn that creates the thread holds its whole prompt")
	_, err = thread.Send(context.Background(), anthropic.BetaMessageThreadSendParams{
		Messages: []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("go on"))},
	})
	return err
}

// Was a bug: the turn that continues an anthropic-sdk-go message thread
// sends only its new messages, and Anthropic bills the conversation it
// holds as input: the Budget reserved the new messages alone, and a
// $0.50 Limit was charged $0.90.
func TestAnthropicMessageThreadTurnIsRefusedWithoutStoredInputReserve(t *testing.T) {
	a := threadAPI(t)
	b := searchBudget(t, httpguard.Dollars(0.50))

	err := sendThreadTurns(t, a, b)

	require.ErrorIs(t, err, httpguard.ErrUnknownModel)
	assert.ErrorContains(t, err, "message thread")
	assert.EqualValues(t, 1, a.hits.Load(), "the continuing turn is not sent")
	assert.Contains(t, string(a.received()[0]), `"thread":{"type":"create"}`)
	assert.LessOrEqual(t, b.Spent(), b.Limit())
}

// With a StoredInputReserve the continuing turn reserves the thread it may
// hold: 300,000 tokens ($0.90) do not fit what is left of $0.50.
func TestAnthropicMessageThreadTurnReservesStoredInputReserve(t *testing.T) {
	a := threadAPI(t)
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"claude-sonnet-4-5": {"input": 3, "output": 15}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollars(0.50), Prices: prices, StoredInputReserve: 300_000})
	require.NoError(t, err)

	err = sendThreadTurns(t, a, b)

	require.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.EqualValues(t, 1, a.hits.Load())
	assert.LessOrEqual(t, b.Spent(), b.Limit())
}
