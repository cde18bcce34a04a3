package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	goopenai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// go-openai under the recommended stack, Retrier → Breaker → Budget →
// Limiter, for the endpoints beside chat and the faults providers make.

// goOpenAIStack is the recommended stack, Retrier → Breaker → Budget →
// Limiter, with a Budget of a dollar pricing deepseek-v3.2 and gpt-4o.
func goOpenAIStack(t *testing.T) (*http.Client, *httpguard.Budget) {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"deepseek-v3.2": {"input": 0.28, "output": 0.42}, "gpt-4o": {"input": 2.5, "output": 10}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices})
	require.NoError(t, err)
	br, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 5})
	require.NoError(t, err)
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 1_000_000})
	require.NoError(t, err)
	return guardedClient(t, newRetrier(t, fastPolicy()), br, b, l), b
}

// Was a bug: go-openai's Moderations, OpenAI's free omni-moderation-latest,
// failed unsent under the recommended stack, every time: the Budget read
// the body to price it and, finding it free, asked GetBody for a copy to
// send, which the Retrier's resend gate refused as a resend by net/http.
func TestGoOpenAIModerationPassesTheRecommendedStack(t *testing.T) {
	a := endpointServer(t, unavailable, always(http.StatusOK,
		`{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"violence":true},"category_scores":{"violence":0.9}}]}`))
	c, b := goOpenAIStack(t)

	got, err := newGoOpenAI(a, c).Moderations(context.Background(),
		goopenai.ModerationRequest{Input: "hi", Model: goopenai.ModerationOmniLatest})

	require.NoError(t, err)
	require.Len(t, got.Results, 1)
	assert.True(t, got.Results[0].Flagged)
	assert.EqualValues(t, 2, a.hits.Load(), "the 503, then its retry")
	bodies := a.received()
	assert.Equal(t, bodies[0], bodies[1])
	assert.Contains(t, string(bodies[1]), `"model":"omni-moderation-latest"`)
	assert.Zero(t, b.Spent(), "free")
}
