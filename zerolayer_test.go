package httpguard

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A layer written as a struct literal (&httpguard.Retrier{}, as one writes
// &http.Transport{}) instead of made by its constructor is not usable. It
// used to panic with a nil pointer dereference on the first request (the
// Retrier, the Limiter, the Breaker, the Fallback), or refuse it as a body
// "over MaxBufferedBody (0 bytes)" that "cannot be priced" (the Budget);
// each request now fails, unsent, with an error that says which
// constructor to call.
func TestAZeroLayerFailsEachRequestSayingWhichConstructorToCall(t *testing.T) {
	api := newServer(t, func(http.ResponseWriter, *http.Request, int) {})
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	for _, c := range []struct {
		layer Layer
		want  string
	}{
		{&Retrier{}, "httpguard: the zero Retrier is not usable: make one with NewRetrier"},
		{&Budget{}, "httpguard: the zero Budget is not usable: make one with NewBudget"},
		{&Limiter{}, "httpguard: the zero Limiter is not usable: make one with NewLimiter"},
		{&Breaker{}, "httpguard: the zero Breaker is not usable: make one with NewBreaker"},
		{&Fallback{}, "httpguard: the zero Fallback is not usable: make one with NewFallback"},
	} {
		client := &http.Client{Transport: Chain(transport, c.layer)}
		body := &zeroLayerBody{Reader: strings.NewReader(`{"model":"deepseek-v3.2","messages":[]}`)}
		req, err := http.NewRequest(http.MethodPost, api.URL+"/v1/chat/completions", body)
		require.NoError(t, err)
		_, err = client.Do(req)
		if assert.Error(t, err, c.want) {
			assert.ErrorContains(t, err, c.want)
			assert.True(t, IsRefusal(err), "nothing was sent: %v", err)
		}
		assert.Positive(t, body.closes.Load(), "%s: the body is closed, as a RoundTripper must", c.want)
	}
	assert.Zero(t, api.hits.Load(), "no zero layer sends anything")
}

type zeroLayerBody struct {
	*strings.Reader
	closes atomic.Int32
}

func (c *zeroLayerBody) Close() error { c.closes.Add(1); return nil }

// The zero Budget's readers fail as its Wrap does, naming the
// constructor: Totals panicked with a nil pointer dereference (and Spent
// and Remaining with it), which otelguard's ObserveBudget calls at each
// collection, inside the meter provider's reader.
func TestAZeroBudgetsTotalsSayWhichConstructorToCall(t *testing.T) {
	var b Budget
	_, _, err := b.Totals(context.Background())
	assert.ErrorContains(t, err, "httpguard: the zero Budget is not usable: make one with NewBudget")
	assert.Zero(t, b.Spent())
	assert.Zero(t, b.Remaining())
}
