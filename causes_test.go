package httpguard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errCallerGaveUp is a caller's own cause, as errgroup's first error is.
var errCallerGaveUp = errors.New("a sibling failed")

// net/http returns a context's cause as the error of an attempt it ends;
// the Retrier, ended by the caller during its wait before a retry,
// returned ctx.Err(): a caller who cancelled with a cause (errgroup's
// first error) could not find it with errors.Is.
func TestARetrierEndedInItsBackoffKeepsTheCallersCause(t *testing.T) {
	api := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	p := DefaultRetryPolicy()
	p.BaseDelay, p.MaxDelay, p.Jitter = time.Minute, time.Minute, 0
	p.OnRetry = func(RetryEvent) { cancel(errCallerGaveUp) } // before the wait
	r, err := NewRetrier(p)
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, r)}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL, strings.NewReader(`{}`))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.Error(t, err)
	assert.ErrorIs(t, err, errCallerGaveUp, "the caller's cause")
	assert.False(t, IsRefusal(err), "one attempt was sent: %v", err)
	assert.ErrorIs(t, err, context.Canceled, "a cancellation")
	var re *RetryError
	if assert.True(t, errors.As(err, &re), "%v", err) {
		assert.Equal(t, 1, re.Attempts)
	}
	assert.EqualValues(t, 1, api.hits.Load(), "no retry after the caller's end")
}

// The Limiter's wait for a turn, ended by the caller, returned ctx.Err():
// the caller's cause was lost. It stays a refusal (nothing was sent).
func TestALimiterWaitEndedByTheCallerKeepsTheCause(t *testing.T) {
	api := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusOK)
	})
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 0.01, Burst: 1, MaxWait: time.Hour,
		OnThrottle: func(ThrottleEvent) { cancel(errCallerGaveUp) }}) // before the wait
	require.NoError(t, err)
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, r, l)}

	for i := range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"m","messages":[]}`))
		require.NoError(t, err)
		resp, err := client.Do(req)
		if i == 0 {
			require.NoError(t, err)
			resp.Body.Close()
			continue
		}
		require.Error(t, err)
		assert.ErrorIs(t, err, errCallerGaveUp, "the caller's cause")
		assert.True(t, IsRefusal(err), "nothing was sent: %v", err)
		assert.ErrorIs(t, err, context.Canceled, "a cancellation")
	}
	assert.EqualValues(t, 1, api.hits.Load())
}
