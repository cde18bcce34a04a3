package otelguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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
	assert.GreaterOrEqual(t, sum(t, got["httpguard.retries"], keyReason.String("timeout")), int64(1))
	// At least the attempt the server held: on a loaded machine a retry
	// too may outlast the 50ms, and is a timeout as well.
	assert.GreaterOrEqual(t, sum(t, got["httpguard.attempts"], keyError.String("timeout")), int64(1), "%v", got["httpguard.attempts"])
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "no caller cancelled anything")
}

// The same over HTTP/2, the protocol of every hosted provider: net/http's
// HTTP/2 transport returns ctx.Err(), a bare context.Canceled, not the
// context's cause, so the Attempts layer asks the context why it ended.
func TestAnAttemptTimeoutOverHTTP2IsATimeoutNotACancellation(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 { // the first attempt hangs until the Retrier gives up on it
			<-r.Context().Done()
			return
		}
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	base := srv.Client().Transport.(*http.Transport)
	t.Cleanup(base.CloseIdleConnections)

	m, reader := newMetrics(t)
	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = time.Millisecond, 0
	policy.AttemptTimeout = 50 * time.Millisecond
	retrier, err := httpguard.NewRetrier(policy)
	require.NoError(t, err)
	client := &http.Client{Transport: httpguard.Chain(base, m.Requests(), retrier, m.Attempts())}
	resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chat))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 2, resp.ProtoMajor)

	got := (&rig{reader: reader}).collect(t)
	// At least the attempt the server held: on a loaded machine a retry
	// too may outlast the 50ms, and is a timeout as well.
	assert.GreaterOrEqual(t, sum(t, got["httpguard.attempts"], keyError.String("timeout")), int64(1), "%v", got["httpguard.attempts"])
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "no caller cancelled anything")
}
