package integration

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests put the Budget and the Limiter in the recommended stack,
// Budget → Retrier → Limiter → base, under the SDKs: their refusals are
// errors without a response, which the SDKs return as they got them from
// http.Client.Do (so errors.Is works) and which openai-go retries like any
// connection error.

// counter is a Layer that counts the requests that pass through it.
type counter struct{ n atomic.Int64 }

func (c *counter) Wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		c.n.Add(1)
		return next.RoundTrip(r)
	})
}

// tinyBudget can afford no request that may produce 100,000 output tokens
// of deepseek-v3.2 ($0.042 at $0.42 per million).
func tinyBudget(t *testing.T) *httpguard.Budget {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollars(0.01), Prices: prices})
	require.NoError(t, err)
	return b
}

const overBudgetMaxTokens = 100_000

// burstOnly lets burst requests per model through, then refuses the next
// ones at once: the next turn is 100s away, far beyond MaxWait.
func burstOnly(t *testing.T, burst int) *httpguard.Limiter {
	t.Helper()
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 0.01, Burst: burst, MaxWait: time.Millisecond})
	require.NoError(t, err)
	return l
}

func TestOpenAIGoBudgetExceededUnwraps(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	calls := &counter{}
	c := guardedClient(t, calls, newRetrier(t, fastPolicy()), tinyBudget(t))
	params := openAIChat()
	params.MaxTokens = openai.Int(overBudgetMaxTokens)

	_, err := newOpenAIGo(a, c, option.WithMaxRetries(0)).Chat.Completions.New(context.Background(), params)

	assert.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.EqualValues(t, 0, a.hits.Load(), "nothing sent")
	assert.EqualValues(t, 1, calls.n.Load())
}

// openai-go retries a budget refusal like a connection error: with its
// default MaxRetries the Budget is asked three times for the same call (and
// the caller waits the SDK's backoff, 1.1–1.5s by default, shortened
// here) before the error comes back.
func TestOpenAIGoRetriesBudgetRefusals(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	calls := &counter{}
	c := guardedClient(t, calls, newRetrier(t, fastPolicy()), tinyBudget(t))
	params := openAIChat()
	params.MaxTokens = openai.Int(overBudgetMaxTokens)

	_, err := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond)).
		Chat.Completions.New(context.Background(), params)

	assert.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.EqualValues(t, 0, a.hits.Load())
	assert.EqualValues(t, 3, calls.n.Load(), "SDK MaxRetries+1")
	assert.Equal(t, []string(nil), a.sdkRetryCounts())
}

func TestGoOpenAIBudgetExceededUnwraps(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	calls := &counter{}
	c := guardedClient(t, calls, newRetrier(t, fastPolicy()), tinyBudget(t))
	req := goOpenAIChat()
	req.MaxTokens = overBudgetMaxTokens

	_, err := newGoOpenAI(a, c).CreateChatCompletion(context.Background(), req)

	assert.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.EqualValues(t, 0, a.hits.Load(), "nothing sent")
	assert.EqualValues(t, 1, calls.n.Load(), "go-openai does not retry")
}

func TestOpenAIGoRateLimitedUnwraps(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	c := guardedClient(t, newRetrier(t, fastPolicy()), burstOnly(t, 1))
	client := newOpenAIGo(a, c, option.WithMaxRetries(0))
	_, err := client.Chat.Completions.New(context.Background(), openAIChat())
	require.NoError(t, err)

	_, err = client.Chat.Completions.New(context.Background(), openAIChat())

	assert.ErrorIs(t, err, httpguard.ErrRateLimited)
	assert.EqualValues(t, 1, a.hits.Load(), "the refused call was not sent")
}

func TestGoOpenAIRateLimitedUnwraps(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	c := guardedClient(t, newRetrier(t, fastPolicy()), burstOnly(t, 1))
	client := newGoOpenAI(a, c)
	_, err := client.CreateChatCompletion(context.Background(), goOpenAIChat())
	require.NoError(t, err)

	_, err = client.CreateChatCompletion(context.Background(), goOpenAIChat())

	assert.ErrorIs(t, err, httpguard.ErrRateLimited)
	assert.EqualValues(t, 1, a.hits.Load(), "the refused call was not sent")
}

// The Retrier does not retry ErrRateLimited (the Limiter already found the
// turn too far away), but openai-go retries it like a connection error: a
// refused call reaches the Limiter SDK MaxRetries+1 = 3 times, and with the
// SDK's default waits the caller gets the error after 1.1–1.5s, however
// short MaxWait is.
func TestOpenAIGoRetriesRateLimitRefusals(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	l := burstOnly(t, 1)
	c := guardedClient(t, newRetrier(t, fastPolicy()), l)
	client := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond))
	_, err := client.Chat.Completions.New(context.Background(), openAIChat())
	require.NoError(t, err)

	_, err = client.Chat.Completions.New(context.Background(), openAIChat())

	assert.ErrorIs(t, err, httpguard.ErrRateLimited)
	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.Zero(t, re.Attempts, "nothing sent, and the Retrier did not retry")
	st := l.Stats()
	assert.EqualValues(t, 1+3, st.Requests)
	assert.EqualValues(t, 3, st.Rejected)
	assert.EqualValues(t, 1, a.hits.Load())
}

// go-openai does not retry and neither does the Retrier: a refused call
// reaches the Limiter once.
func TestGoOpenAIRateLimitRefusalIsNotRetried(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	l := burstOnly(t, 1)
	c := guardedClient(t, newRetrier(t, fastPolicy()), l)
	client := newGoOpenAI(a, c)
	_, err := client.CreateChatCompletion(context.Background(), goOpenAIChat())
	require.NoError(t, err)

	_, err = client.CreateChatCompletion(context.Background(), goOpenAIChat())

	assert.ErrorIs(t, err, httpguard.ErrRateLimited)
	assert.EqualValues(t, 2, l.Stats().Requests)
	assert.EqualValues(t, 1, l.Stats().Rejected)
}

// Rate-limit refusals take nothing from the Retrier's retry budget: after
// more refusals for one model than the budget's headroom (10 failed
// attempts), a transient 503 on another model is still retried.
func TestRateLimitRefusalsLeaveTheRetryBudget(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 3 { // the first request for deepseek-v3.2
			reply(w, http.StatusServiceUnavailable, openAIUnavailable)
			return
		}
		reply(w, http.StatusOK, chatCompletion)
	})
	client := newGoOpenAI(a, guardedClient(t, newRetrier(t, fastPolicy()), burstOnly(t, 2)))
	limited := goOpenAIChat()
	limited.Model = "model-a"
	for range 2 {
		_, err := client.CreateChatCompletion(context.Background(), limited)
		require.NoError(t, err, "model-a's burst")
	}
	for range 12 {
		_, err := client.CreateChatCompletion(context.Background(), limited)
		require.ErrorIs(t, err, httpguard.ErrRateLimited)
	}

	got, err := client.CreateChatCompletion(context.Background(), goOpenAIChat())

	require.NoError(t, err, "the transient 503 was retried")
	assert.Equal(t, "hello", got.Choices[0].Message.Content)
	assert.EqualValues(t, 4, a.hits.Load())
}

// openai-go waits its backoff (0.5s less up to 25%, then 1s less up to
// 25%) before it asks again after a refusal, and a caller's deadline that
// passes during that wait ends the call with the context's error alone:
// the refusal is lost, and the caller waited its whole deadline for
// what the Budget knew at once. option.WithMaxRetries(0) returns the
// refusal at once (TestOpenAIGoBudgetExceededUnwraps).
func TestOpenAIGoTurnsARefusalIntoTheCallersDeadline(t *testing.T) {
	a := newAPI(t, always(http.StatusOK, chatCompletion))
	calls := &counter{}
	c := guardedClient(t, calls, newRetrier(t, fastPolicy()), tinyBudget(t))
	params := openAIChat()
	params.MaxTokens = openai.Int(overBudgetMaxTokens)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond) // shorter than the SDK's first wait
	defer cancel()

	_, err := newOpenAIGo(a, c).Chat.Completions.New(ctx, params)

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, httpguard.ErrBudgetExceeded, "openai-go returns the context's error alone")
	assert.EqualValues(t, 1, calls.n.Load())
	assert.EqualValues(t, 0, a.hits.Load())
}
