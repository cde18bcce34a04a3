package httpguard

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// siblingUnsendable is what client.Do returns for a request net/http
// refuses before sending (here a URL's scheme; an API key with its
// newline is another): errgroup's first error, then the others' cause.
func siblingUnsendable(t *testing.T) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "htps://api.test/v1/chat/completions", strings.NewReader(`{}`))
	require.NoError(t, err)
	_, err = (&http.Client{Transport: &http.Transport{}}).Do(req)
	require.True(t, unsendable(err), "%v", err)
	return err
}

// The Retrier took an attempt in flight for one net/http refused unsent
// when the caller's cause was a sibling's request net/http had refused: it
// found net/http's words inside the cause and returned a refusal,
// RetryError{Attempts: 0} ("nothing sent"), for a request the server had.
func TestAnUnsendableSiblingAsTheCauseDoesNotUnsendAnAttempt(t *testing.T) {
	sibling := siblingUnsendable(t)
	arrived := make(chan struct{})
	release := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	defer api.Close()
	defer close(release)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, r)}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		<-arrived
		cancel(sibling)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL, strings.NewReader(`{}`))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, sibling, "the caller's own end")
	assert.False(t, IsRefusal(err), "the attempt reached the server: %v", err)
	var re *RetryError
	if assert.True(t, errors.As(err, &re), "%v", err) {
		assert.Equal(t, 1, re.Attempts, "the attempt sent counts")
	}
}

// The Budget released, uncharged, an attempt a transport that does not
// report what it did had sent, when the caller's cause was a sibling's
// request net/http had refused: the provider may have billed it.
func TestABudgetChargesAnUntracedAttemptEndedByAnUnsendableCause(t *testing.T) {
	sibling := siblingUnsendable(t)
	b, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
	require.NoError(t, err)
	sending := make(chan struct{})
	untraced := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		close(sending)
		<-req.Context().Done()
		return nil, context.Cause(req.Context())
	})
	client := &http.Client{Transport: Chain(untraced, b)}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		<-sending
		cancel(sibling)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/v1/chat/completions",
		strings.NewReader(`{"model":"deepseek-v3.2","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, sibling)
	assert.Positive(t, b.Spent(), "the attempt's reservation is charged: the provider may have billed it")
}
