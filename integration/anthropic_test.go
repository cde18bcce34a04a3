package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newAnthropic returns an anthropic-sdk-go client for a, sending through c,
// with the SDK's defaults (MaxRetries 2) unless opts change them. It reads
// no environment variables or profiles.
func newAnthropic(a *api, c *http.Client, opts ...option.RequestOption) *anthropic.Client {
	client := anthropic.NewClient(append([]option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithAPIKey("sk-ant-test"),
		option.WithBaseURL(a.URL + "/"),
		option.WithHTTPClient(c),
	}, opts...)...)
	return &client
}

func anthropicMessageParams() anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
	}
}

func TestAnthropicOverloadSendsOnlyRetrierAttempts(t *testing.T) {
	a := newAPI(t, always(statusOverloaded, anthropicOverload))
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	_, err := newAnthropic(a, c).Messages.New(context.Background(), anthropicMessageParams())

	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, statusOverloaded, apiErr.StatusCode)
	assert.EqualValues(t, "overloaded_error", apiErr.Type())
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load(), "not multiplied by the SDK's own 3 attempts")
	assert.Equal(t, sdkFirstAttemptOnly(retrierMaxAttempts), a.sdkRetryCounts())
}

func TestAnthropicSucceedsAfterTransientOverload(t *testing.T) {
	a := newAPI(t, failFirst(1, statusOverloaded, anthropicOverload, anthropicMessage))
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	got, err := newAnthropic(a, c).Messages.New(context.Background(), anthropicMessageParams())

	require.NoError(t, err)
	require.Len(t, got.Content, 1)
	assert.Equal(t, "hello", got.Content[0].Text)
	assert.EqualValues(t, 5, got.Usage.InputTokens)
	assert.EqualValues(t, 2, a.hits.Load())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts(), "the Retrier retried, not the SDK")
}

func TestAnthropicTransportErrorUnwrapsToRetryError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, attemptTimeoutPolicy()), a.reachesServer())

	_, err := newAnthropic(a, c, option.WithMaxRetries(0)).
		Messages.New(context.Background(), anthropicMessageParams())

	require.Error(t, err)
	var ue *url.Error
	assert.ErrorAs(t, err, &ue, "anthropic-sdk-go returns http.Client.Do's error as it is")
	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, retrierMaxAttempts, re.Attempts)
	assert.ErrorIs(t, err, httpguard.ErrAttemptTimeout)
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load())
}

// anthropic-sdk-go, like openai-go, retries any error without a response.
// Its waits (0.5s·2^n less up to 25%) cannot be shortened, so this test
// lets it retry once: about half a second.
func TestAnthropicRetriesRetrierTransportErrorsAgain(t *testing.T) {
	a := newAPI(t, hang)
	p := attemptTimeoutPolicy()
	p.RetryBudget.Disabled = true
	c := guardedClient(t, newRetrier(t, p), a.reachesServer())

	_, err := newAnthropic(a, c, option.WithMaxRetries(1)).
		Messages.New(context.Background(), anthropicMessageParams())

	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, 2*retrierMaxAttempts, a.hits.Load())
	assert.Equal(t, []string{"0", "0", "0", "0", "1", "1", "1", "1"}, a.sdkRetryCounts())
}

// When the caller's context ends, anthropic-sdk-go returns ctx.Err()
// itself, like openai-go.
func TestAnthropicCallerDeadlineReturnsBareContextError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, fastPolicy()))
	ctx := expiresOnHit(a)

	_, err := newAnthropic(a, c).Messages.New(ctx, anthropicMessageParams())

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var re *httpguard.RetryError
	assert.False(t, errors.As(err, &re), "anthropic-sdk-go drops the transport error: %v", err)
	assert.EqualValues(t, 1, a.hits.Load())
}

// anthropic-sdk-go reads a non-streaming answer inside its attempt, and
// when that read fails it retries unless the response says X-Should-Retry:
// false. A 2xx was produced and billed (doc.go: "the answer was produced
// and billed, and the caller gets it"), and the Retrier has decided not to
// retry it; yet the SDK sends it again, once per SDK retry, each billed,
// because the Retrier marks only statuses the SDK would retry.
func TestAnthropicDoesNotResendABilledAnswerCutWhileRead(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(anthropicMessage)))
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, anthropicMessage[:20])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks mid-answer
	})
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	// One SDK retry (about half a second), rather than the default two.
	_, err := newAnthropic(a, c, option.WithMaxRetries(1)).Messages.New(context.Background(), anthropicMessageParams())

	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.EqualValues(t, 1, a.hits.Load(), "the billed answer was sent again")
}

// overloadThenHold answers the odd requests 529 at once and holds the even
// ones until the client goes away: a provider that is overloaded, then
// keeps the retry waiting.
func overloadThenHold(w http.ResponseWriter, r *http.Request, n int) {
	if n%2 == 1 {
		reply(w, statusOverloaded, anthropicOverload)
		return
	}
	<-r.Context().Done()
}

// anthropic-sdk-go's option.WithRequestTimeout bounds each of its own
// attempts, and one that ends while the Retrier is still at work (a retry
// held by the server) is retried like a connection error, whatever the
// answers before it said: the Retrier's loop runs again, once per SDK
// attempt. Here each SDK attempt costs the 529 and the held retry.
func TestAnthropicRunsTheRetrierAgainWhenItsRequestTimeoutEndsIt(t *testing.T) {
	a := newAPI(t, overloadThenHold)
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	_, err := newAnthropic(a, c, option.WithMaxRetries(1), option.WithRequestTimeout(500*time.Millisecond)).
		Messages.New(context.Background(), anthropicMessageParams())

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.EqualValues(t, 4, a.hits.Load(), "two requests per SDK attempt")
	assert.Equal(t, []string{"0", "0", "1", "1"}, a.sdkRetryCounts())
}
