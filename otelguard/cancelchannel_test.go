package otelguard

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller may still cancel a request by closing its Cancel channel
// (deprecated, honoured by net/http, and by the Retrier, which does not
// retry it): net/http then ends the attempt with "net/http: request
// canceled", which is no context's error. Both Layers counted it as
// error.type=connection, a fault of the provider's connection, where the
// package documentation says a caller's cancellation is canceled.
func TestACallerCancellationByTheCancelChannelIsNotAConnectionError(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.SlowHeaders(time.Hour)))
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, r.srv.BaseURL()+"/chat/completions", strings.NewReader(chat))
	require.NoError(t, err)
	cancel := make(chan struct{})
	req.Cancel = cancel
	go func() { // the caller gives up once the server holds the request
		for r.srv.Stats().Requests == 0 {
			time.Sleep(time.Millisecond)
		}
		close(cancel)
	}()
	_, err = r.client.Do(req)
	require.ErrorContains(t, err, "request canceled")

	got := r.collect(t)
	assert.Zero(t, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("error"), keyError.String("canceled")))
	assert.Zero(t, sum(t, got["httpguard.attempts"], keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], keyError.String("canceled")))
}
