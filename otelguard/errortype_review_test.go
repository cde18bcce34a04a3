package otelguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a review): errorType sorted every error that was not
// a timeout as "connection", a caller's own cancellation included. A
// gateway whose clients hang up while they wait for a turn, or an app that
// cancels a call its user left, then showed connection errors to the
// provider that never happened, and alerts on error.type=connection fired
// for the callers' doing.
func TestACallerCancellationIsNotAConnectionError(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the caller gives up once the server holds the request
		for r.srv.Stats().Requests == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := r.send(t, ctx)
	require.ErrorIs(t, err, context.Canceled)

	got := r.collect(t)
	assert.Zero(t, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("canceled")))
}

// Was a bug (found by a review): a request whose caller cancelled it
// before anything was sent (the Retrier returns the context's error marked
// as a refusal) counted as a refusal by an "other" layer: no layer refused
// it, the caller gave up.
func TestACallerCancellationBeforeSendingIsNotARefusal(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.send(t, ctx)
	require.ErrorIs(t, err, context.Canceled)

	got := r.collect(t)
	assert.Nil(t, got["httpguard.refusals"], "no layer refused it")
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
}
