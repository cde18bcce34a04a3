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

// Was a bug (found by a review): errorType sorted every error that was not
// a timeout as "connection", a caller's own cancellation included. A
// gateway whose clients hang up while they wait for a turn, or an app that
// cancels a call its user left, then showed connection errors to the
// provider that never happened, and alerts on error.type=connection fired
// for the callers' doing.
//
// Was a bug too (found by a hunt): errorType and refusedBy knew a caller's
// cancellation by context.Canceled only, but net/http returns a context's
// cause, which a caller may choose (context.WithCancelCause; errgroup
// cancels the rest of a group with its first error): cancelled with a
// cause, the request counted as a connection error again. The layers now
// sort an error that is the context's end by how the context ended.
func TestACallerCancellationIsNotAConnectionError(t *testing.T) {
	for name, cancelWith := range callerCancellations {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
			require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
			ctx, cancel := cancelWith(context.Background())
			defer cancel()
			go func() { // the caller gives up once the server holds the request
				for r.srv.Stats().Requests == 0 {
					time.Sleep(time.Millisecond)
				}
				cancel()
			}()
			_, err := r.send(t, ctx)
			require.ErrorIs(t, err, context.Cause(ctx), "the caller's own end")

			got := r.collect(t)
			assert.Zero(t, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("connection")))
			assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
			assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("connection")))
			assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("canceled")))
		})
	}
}

// Was a bug (found by a review): a request whose caller cancelled it
// before anything was sent (the Retrier returns the context's error marked
// as a refusal) counted as a refusal by an "other" layer: no layer refused
// it, the caller gave up. With a cause, it did again (found by a hunt).
func TestACallerCancellationBeforeSendingIsNotARefusal(t *testing.T) {
	for name, cancelWith := range callerCancellations {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
			ctx, cancel := cancelWith(context.Background())
			cancel()
			_, err := r.send(t, ctx)
			require.ErrorIs(t, err, context.Cause(ctx), "the caller's own end")

			got := r.collect(t)
			assert.Nil(t, got["httpguard.refusals"], "no layer refused it")
			assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
		})
	}
}

// callerCancellations are the ways a caller cancels its request: plainly,
// or with a cause of its own, as errgroup does with a group's first error.
var callerCancellations = map[string]func(context.Context) (context.Context, context.CancelFunc){
	"plain": context.WithCancel,
	"with a cause": func(parent context.Context) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancelCause(parent)
		return ctx, func() { cancel(errUserLeft) }
	},
}

// errUserLeft is the cause a caller cancels its request with.
var errUserLeft = errors.New("the user left")
