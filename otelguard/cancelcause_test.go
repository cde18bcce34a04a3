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

// Was a bug: errorType knew a caller's deadline by
// context.DeadlineExceeded, but net/http returns a context's cause, which
// a caller may choose (context.WithTimeoutCause): a request past a deadline
// with a cause counted as a connection error, not a timeout. (The
// cancellations with a cause are subtests of the plain ones, in
// errortype_review_test.go.)
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
