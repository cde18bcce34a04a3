package otelguard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errgroup cancels the rest of a group with its first error, and in a
// fan-out of model calls that is often a sibling's refusal: the Budget's
// ErrBudgetExceeded. net/http returns that cause as the error of a request
// in flight, which then counted as a refusal by the Budget, though the
// Budget refused nothing of it: the caller gave up, as with any other
// cause.
func TestACallerCancellationWithASiblingsRefusalIsNotARefusal(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// As a sibling's refused call returns it: marked a refusal.
	sibling := fmt.Errorf("a sibling's call: %w", httpguard.Refuse(httpguard.ErrBudgetExceeded))
	go func() { // the group gives up once the server holds the request
		for r.srv.Stats().Requests == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel(sibling)
	}()
	_, err := r.send(t, ctx)
	require.ErrorIs(t, err, sibling, "the caller's own end")

	got := r.collect(t)
	assert.Nil(t, got["httpguard.refusals"], "no layer refused it")
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")), "%v", got["httpguard.requests"])
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "the attempt in flight was sent: %v", got["httpguard.attempts"])
}
