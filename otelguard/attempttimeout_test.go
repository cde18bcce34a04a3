package otelguard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	retrier := heldAttemptsRetrier(t, m)
	r := &rig{srv: srv, reader: reader, m: m, client: clientOf(t, srv, m.Requests(), retrier, m.Attempts())}
	require.NoError(t, srv.StartOutage(httpguardtest.SlowHeaders(time.Hour)))

	_, err := r.send(t, context.Background())
	require.ErrorIs(t, err, httpguard.ErrAttemptTimeout)

	got := r.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], keyReason.String("timeout")))
	assert.EqualValues(t, 2, sum(t, got["httpguard.attempts"], keyError.String("timeout")), "%v", got["httpguard.attempts"])
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "no caller cancelled anything")
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("timeout")), "%v", got["httpguard.requests"])
}

// The same over HTTP/2, the protocol of every hosted provider: net/http's
// HTTP/2 transport returns ctx.Err(), a bare context.Canceled, not the
// context's cause, so the Attempts layer asks the context why it ended.
func TestAnAttemptTimeoutOverHTTP2IsATimeoutNotACancellation(t *testing.T) {
	var mu sync.Mutex
	var protos []int // of the attempts that reached the server
	arrived := make(chan struct{}, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		mu.Lock()
		protos = append(protos, r.ProtoMajor)
		mu.Unlock()
		arrived <- struct{}{}
		<-r.Context().Done() // every attempt hangs until the Retrier gives up on it
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	base := srv.Client().Transport.(*http.Transport)
	t.Cleanup(base.CloseIdleConnections)
	// The attempts go on this HTTP/2 connection: no TLS handshake of
	// theirs can be what the timeout cuts short.
	warm, err := (&http.Client{Transport: base}).Get(srv.URL + "/warm")
	require.NoError(t, err)
	warm.Body.Close()
	require.Equal(t, 2, warm.ProtoMajor)

	m, reader := newMetrics(t)
	client := &http.Client{Transport: httpguard.Chain(base, m.Requests(), heldAttemptsRetrier(t, m), m.Attempts(), endOnceArrived(arrived))}
	_, err = client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chat))
	require.ErrorIs(t, err, httpguard.ErrAttemptTimeout)

	got := (&rig{reader: reader}).collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], keyReason.String("timeout")))
	assert.EqualValues(t, 2, sum(t, got["httpguard.attempts"], keyError.String("timeout")), "%v", got["httpguard.attempts"])
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("canceled")), "no caller cancelled anything")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{2, 2}, protos, "both attempts reached the server, over HTTP/2")
}

// endOnceArrived returns a layer, for below the Attempts layer, that
// passes the end of an attempt's context (its AttemptTimeout firing) on to
// the transport only once the server has received the attempt (arrived
// receives): on a loaded machine an attempt could otherwise end before
// the server saw it. An attempt the server holds still times out: the
// Retrier reads its own timer, and the Attempts layer its own context.
func endOnceArrived(arrived <-chan struct{}) httpguard.Layer {
	return httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			returned := make(chan struct{})
			ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
			context.AfterFunc(r.Context(), func() {
				select {
				case <-arrived:
				case <-returned: // it never will arrive: a dial failed, say
				}
				cancel(context.Cause(r.Context()))
			})
			resp, err := next.RoundTrip(r.WithContext(ctx))
			close(returned)
			return resp, err
		})
	})
}

// heldAttemptsRetrier is a Retrier of one retry whose attempts time out
// after 50ms and whose retries m counts, for a server that holds every
// attempt until the Retrier gives up on it: only that the timeout fires
// matters, not when, so the tests do not depend on how fast a loaded
// machine answers.
func heldAttemptsRetrier(t *testing.T, m *Metrics) *httpguard.Retrier {
	t.Helper()
	policy := httpguard.DefaultRetryPolicy()
	policy.MaxRetries, policy.BaseDelay, policy.Jitter = 1, time.Millisecond, 0
	policy.AttemptTimeout = 50 * time.Millisecond
	policy.OnRetry = m.OnRetry()
	retrier, err := httpguard.NewRetrier(policy)
	require.NoError(t, err)
	return retrier
}
