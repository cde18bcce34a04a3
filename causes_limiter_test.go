package httpguard

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Limiter gives a request's tokens back when a layer below refused it
// unsent. It asked IsRefusal, which also finds a Refuse mark inside the
// caller's cancellation cause (errgroup's first error: a sibling's
// ErrBudgetExceeded): the tokens of a request the server had whole went
// back, and the next request went at once, over the configured rate.
func TestALimiterKeepsTheTokensOfAnAttemptEndedByARefusalCause(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	api := newServer(t, func(_ http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			close(arrived)
			<-release
		}
	})
	defer close(release)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 1500, MaxWait: -1})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, l)}
	body := `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sibling := &url.Error{Op: "Post", URL: api.URL, Err: &RetryError{Err: Refuse(fmt.Errorf("httpguard: budget: %w", ErrBudgetExceeded))}}
	go func() {
		<-arrived
		cancel(sibling)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, sibling)

	req, err = http.NewRequest(http.MethodPost, api.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, ErrRateLimited, "the first request's tokens were spent: it reached the server")
	assert.EqualValues(t, 1, api.hits.Load())
}
