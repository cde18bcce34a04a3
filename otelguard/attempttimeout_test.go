package otelguard

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the Retrier ends an attempt past RetryPolicy.AttemptTimeout
// by cancelling the attempt's context, and the Attempts layer below it saw
// only net/http's context.Canceled, which errorType rightly reads as the
// caller giving up: every attempt timeout was counted as
// error.type=canceled, none as timeout, so a provider that hung looked like
// impatient callers (while httpguard.retries said timeout for the same
// attempts). The attempt's context now ends with ErrAttemptTimeout as its
// cause, which net/http returns.
func TestAnAttemptTimeoutIsATimeoutNotACancellation(t *testing.T) {
	srv := faultServer(t)
	m, reader := newMetrics(t)
	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = time.Millisecond, 0
	policy.AttemptTimeout = 50 * time.Millisecond
	policy.OnRetry = m.OnRetry()
	retrier, err := httpguard.NewRetrier(policy)
	require.NoError(t, err)
	r := &rig{srv: srv, reader: reader, m: m, client: clientOf(t, srv, m.Requests(), retrier, m.Attempts())}
	require.NoError(t, srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))

	status, err := r.send(t, context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)

	got := r.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], keyReason.String("timeout")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("timeout")), "%v", got["httpguard.attempts"])
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "no caller cancelled anything")
}
