package integration

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	goopenai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newGoOpenAI returns a go-openai client for a, sending through c.
func newGoOpenAI(a *api, c *http.Client) *goopenai.Client {
	cfg := goopenai.DefaultConfig("sk-test")
	cfg.BaseURL = a.URL + "/v1"
	cfg.HTTPClient = c
	return goopenai.NewClientWithConfig(cfg)
}

func goOpenAIChat() goopenai.ChatCompletionRequest {
	return goopenai.ChatCompletionRequest{
		Model:     "deepseek-v3.2",
		Messages:  []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "hello"}},
		MaxTokens: 64,
	}
}

func TestGoOpenAIOutageReturnsAPIErrorAfterRetrierAttempts(t *testing.T) {
	a := newAPI(t, always(http.StatusServiceUnavailable, openAIUnavailable))
	c := guardedClient(t, newRetrier(t, fastPolicy()))

	_, err := newGoOpenAI(a, c).CreateChatCompletion(context.Background(), goOpenAIChat())

	var apiErr *goopenai.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusServiceUnavailable, apiErr.HTTPStatusCode)
	assert.Equal(t, "upstream overloaded", apiErr.Message)
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load(), "go-openai does not retry by itself")
}

func TestGoOpenAIRetriesSendByteIdenticalBodies(t *testing.T) {
	a := newAPI(t, failFirst(2, http.StatusServiceUnavailable, openAIUnavailable, chatCompletion))
	var mu sync.Mutex
	var hadGetBody []bool
	recordGetBody := httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			hadGetBody = append(hadGetBody, r.GetBody != nil)
			mu.Unlock()
			return next.RoundTrip(r)
		})
	})
	c := guardedClient(t, recordGetBody, newRetrier(t, fastPolicy()))

	got, err := newGoOpenAI(a, c).CreateChatCompletion(context.Background(), goOpenAIChat())

	require.NoError(t, err)
	assert.Equal(t, "hello", got.Choices[0].Message.Content)
	assert.Equal(t, []bool{true}, hadGetBody, "go-openai sets GetBody, so the Retrier needs no copy")
	bodies := a.received()
	require.Len(t, bodies, 3)
	assert.Contains(t, string(bodies[0]), `"model":"deepseek-v3.2"`)
	assert.Equal(t, bodies[0], bodies[1])
	assert.Equal(t, bodies[0], bodies[2])
}

func TestGoOpenAITransportErrorUnwrapsToRetryError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, attemptTimeoutPolicy()), a.reachesServer())

	_, err := newGoOpenAI(a, c).CreateChatCompletion(context.Background(), goOpenAIChat())

	require.Error(t, err)
	var ue *url.Error
	assert.ErrorAs(t, err, &ue, "go-openai returns http.Client.Do's error as it is")
	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, retrierMaxAttempts, re.Attempts)
	assert.ErrorIs(t, err, httpguard.ErrAttemptTimeout)
	assert.EqualValues(t, retrierMaxAttempts, a.hits.Load())
}

// Unlike the Stainless SDKs, go-openai keeps the transport error when the
// caller's context ends.
func TestGoOpenAICallerDeadlineKeepsRetryError(t *testing.T) {
	a := newAPI(t, hang)
	c := guardedClient(t, newRetrier(t, fastPolicy()))
	ctx := expiresOnHit(a)

	_, err := newGoOpenAI(a, c).CreateChatCompletion(ctx, goOpenAIChat())

	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var re *httpguard.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.EqualValues(t, 1, a.hits.Load())
}
