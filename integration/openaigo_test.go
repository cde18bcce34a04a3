package integration

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newOpenAIGo returns an openai-go client for a, sending through c, with
// the SDK's defaults (MaxRetries 2) unless opts change them.
func newOpenAIGo(a *api, c *http.Client, opts ...option.RequestOption) *openai.Client {
	client := openai.NewClient(append([]option.RequestOption{
		option.WithAPIKey("sk-test"),
		option.WithBaseURL(a.URL + "/v1/"),
		option.WithHTTPClient(c),
	}, opts...)...)
	return &client
}

func openAIChat() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    "deepseek-v3.2",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	}
}

// sdkFirstAttemptOnly is what the server sees in X-Stainless-Retry-Count when
// the SDK made one attempt and the Retrier all the others.
func sdkFirstAttemptOnly(attempts int) []string {
	return strings.Split(strings.Repeat("0", attempts), "")
}

func TestOpenAIGoOutageSendsOnlyRetrierAttempts(t *testing.T) {
	a := newAPI(t, always(http.StatusServiceUnavailable, openAIUnavailable))
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	_, err := newOpenAIGo(a, c).Chat.Completions.New(context.Background(), openAIChat())

	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusServiceUnavailable, apiErr.StatusCode)
	assert.Equal(t, "upstream overloaded", apiErr.Message)
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load(), "not multiplied by the SDK's own 3 attempts")
	assert.Equal(t, sdkFirstAttemptOnly(retrierMaxAttempts), a.sdkRetryCounts())
}

// The control for the test above: without the X-Should-Retry: false the
// Retrier adds, openai-go runs its own retry loop around ours.
func TestOpenAIGoOutageMultipliesAttemptsWithoutShouldRetryHeader(t *testing.T) {
	a := newAPI(t, always(http.StatusServiceUnavailable, openAIUnavailable))
	stripHeader := httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(r)
			if resp != nil {
				resp.Header.Del("X-Should-Retry")
			}
			return resp, err
		})
	})
	p := fastPolicy()
	p.RetryBudget.Disabled = true // or the retry budget would cut the product short
	c := guardedClient(t, stripHeader, newRetrier(t, p))

	_, err := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond)).
		Chat.Completions.New(context.Background(), openAIChat())

	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.EqualValues(t, 3*retrierMaxAttempts, a.hits.Load())
}

func TestOpenAIGoSucceedsAfterTransient503(t *testing.T) {
	a := newAPI(t, failFirst(1, http.StatusServiceUnavailable, openAIUnavailable, chatCompletion))
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	got, err := newOpenAIGo(a, c).Chat.Completions.New(context.Background(), openAIChat())

	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	assert.Equal(t, "hello", got.Choices[0].Message.Content)
	assert.EqualValues(t, 6, got.Usage.TotalTokens)
	assert.EqualValues(t, 2, a.hits.Load())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts(), "the Retrier retried, not the SDK")
}

func TestOpenAIGoStreamsThroughRetrier(t *testing.T) {
	stream := streamChunks("Hel", "lo", "!")
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			reply(w, http.StatusServiceUnavailable, openAIUnavailable)
			return
		}
		stream(w)
	})
	c := guardedClient(t, newRetrier(t, fastPolicy()))
	params := openAIChat()
	params.StreamOptions.IncludeUsage = openai.Bool(true)

	s := newOpenAIGo(a, c).Chat.Completions.NewStreaming(context.Background(), params)
	defer s.Close()
	var text strings.Builder
	var chunks int
	var usage openai.CompletionUsage
	for s.Next() {
		chunk := s.Current()
		chunks++
		for _, ch := range chunk.Choices {
			text.WriteString(ch.Delta.Content)
		}
		if len(chunk.Choices) == 0 {
			usage = chunk.Usage
		}
	}

	require.NoError(t, s.Err())
	assert.Equal(t, "Hello!", text.String())
	assert.Equal(t, 4, chunks, "three content chunks and the usage chunk")
	assert.EqualValues(t, 7, usage.PromptTokens)
	assert.EqualValues(t, 3, usage.CompletionTokens)
	assert.EqualValues(t, 10, usage.TotalTokens)
	assert.EqualValues(t, 2, a.hits.Load())
	assert.Contains(t, string(a.received()[1]), `"stream":true`)
}

// attemptTimeoutPolicy makes every attempt against a hanging server end in
// a transport error (ErrAttemptTimeout) that the Retrier retries. Under
// a.reachesServer(), each attempt reaches the server before it ends, however
// loaded the machine.
func attemptTimeoutPolicy() httpguard.RetryPolicy {
	p := fastPolicy()
	p.AttemptTimeout = 100 * time.Millisecond
	return p
}

func TestOpenAIGoTransportErrorUnwrapsToRetryError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, attemptTimeoutPolicy()), a.reachesServer())

	_, err := newOpenAIGo(a, c, option.WithMaxRetries(0)).
		Chat.Completions.New(context.Background(), openAIChat())

	require.Error(t, err)
	var ue *url.Error
	assert.ErrorAs(t, err, &ue, "openai-go returns http.Client.Do's error as it is")
	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, retrierMaxAttempts, re.Attempts)
	assert.ErrorIs(t, err, httpguard.ErrAttemptTimeout)
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load())
}

// openai-go retries any error without a response, so a transport error the
// Retrier gave up on is tried again (SDK MaxRetries+1)·(Retrier
// MaxRetries+1) times in all. option.WithMaxRetries(0) avoids it.
func TestOpenAIGoRetriesRetrierTransportErrorsAgain(t *testing.T) {
	a := newAPI(t, hang)
	p := attemptTimeoutPolicy()
	p.RetryBudget.Disabled = true
	c := guardedClient(t, newRetrier(t, p), a.reachesServer())

	_, err := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond)).
		Chat.Completions.New(context.Background(), openAIChat())

	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, 3*retrierMaxAttempts, a.hits.Load())
	assert.Equal(t, []string{"0", "0", "0", "0", "1", "1", "1", "1", "2", "2", "2", "2"}, a.sdkRetryCounts())
}

// The Retrier's retry budget spans the SDK's attempts too: with a budget
// of 4 saved retries, the SDK's first attempt spends 3 of them, and each of
// the next two earns only about one retry (the success rate of recent
// attempts, falling), whoever asked for them.
func TestOpenAIGoTransportErrorRetriesAreBoundedByRetryBudget(t *testing.T) {
	a := newAPI(t, hang)
	p := attemptTimeoutPolicy()
	p.RetryBudget.Burst = 4
	c := guardedClient(t, newRetrier(t, p), a.reachesServer())

	_, err := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond)).
		Chat.Completions.New(context.Background(), openAIChat())

	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.EqualValues(t, 8, a.hits.Load())
	assert.Equal(t, []string{"0", "0", "0", "0", "1", "1", "2", "2"}, a.sdkRetryCounts())
}

// When the caller's context ends, openai-go returns ctx.Err() itself: the
// cause is still there for errors.Is, the *httpguard.RetryError is not.
func TestOpenAIGoCallerDeadlineReturnsBareContextError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, fastPolicy()))
	ctx := expiresOnHit(a)

	_, err := newOpenAIGo(a, c).Chat.Completions.New(ctx, openAIChat())

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var re *httpguard.RetryError
	assert.False(t, errors.As(err, &re), "openai-go drops the transport error: %v", err)
	assert.EqualValues(t, 1, a.hits.Load())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// openai-go does not retry an attempt its option.WithRequestTimeout ended:
// it returns the context's error, and the server sees one Retrier loop.
func TestOpenAIGoDoesNotRetryWhenItsRequestTimeoutEndsTheRetrier(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n%2 == 1 {
			reply(w, http.StatusServiceUnavailable, openAIUnavailable)
			return
		}
		<-r.Context().Done()
	})
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	_, err := newOpenAIGo(a, c, option.WithMaxRetryDelay(time.Millisecond), option.WithRequestTimeout(500*time.Millisecond)).
		Chat.Completions.New(context.Background(), openAIChat())

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.EqualValues(t, 2, a.hits.Load())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts())
}
