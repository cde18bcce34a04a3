package otelguard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errUserLeft is the cause a caller cancels its request with, as
// errgroup does with the first error of a group.
var errUserLeft = errors.New("the user left")

// Was a bug: errorType and refusedBy knew a caller's cancellation by
// context.Canceled and its deadline by context.DeadlineExceeded, but
// net/http returns a context's cause, which a caller may choose
// (context.WithCancelCause, WithTimeoutCause; errgroup cancels the rest of
// a group with its first error). A request its caller cancelled with a
// cause counted as a connection error (alerts on error.type=connection
// fired for the callers' doing), one cancelled so before sending as a
// refusal by an "other" layer, and one past a deadline with a cause as a
// connection error, not a timeout. The layers now sort an error that is
// the context's end by how the context ended.
func TestACallerCancellationWithACauseIsNotAConnectionError(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() { // the caller gives up once the server holds the request
		for r.srv.Stats().Requests == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel(errUserLeft)
	}()
	_, err := r.send(t, ctx)
	require.Error(t, err)

	got := r.collect(t)
	assert.Zero(t, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("canceled")))
}

func TestACallerCancellationWithACauseBeforeSendingIsNotARefusal(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errUserLeft)
	_, err := r.send(t, ctx)
	require.Error(t, err)

	got := r.collect(t)
	assert.Nil(t, got["httpguard.refusals"], "no layer refused it")
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
}

func TestACallersDeadlineWithACauseIsATimeout(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, errUserLeft)
	defer cancel()
	_, err := r.send(t, ctx)
	require.Error(t, err)

	got := r.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("timeout")), "%v", got["httpguard.requests"])
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("timeout")), "%v", got["httpguard.attempts"])
}
