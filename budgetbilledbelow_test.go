package httpguard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// billEveryRead is a loopback provider that bills every request it reads
// whole its reservation (at testPrices, max_tokens 5), answering a 200
// whose usage is that reservation and whose header says to retry it.
func billEveryRead(t *testing.T) (url string, billed, reads *atomic.Int64) {
	billed, reads = new(atomic.Int64), new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		reads.Add(1)
		billed.Add(int64(reservation(string(b), 5)))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Should-Retry", "true")
		fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(b))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, billed, reads
}

// assertBilledWithin asserts, against what a server billed for the
// requests it read, that b charged every bill, that the bills stayed
// within limit, and that b holds nothing once the call is over.
func assertBilledWithin(t *testing.T, b *Budget, billed, reads *atomic.Int64, limit Money) {
	t.Helper()
	t.Logf("the server read the request %d times; billed %v, charged %v, limit %v", reads.Load(), Money(billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider may bill no more than the Limit")
	_, held, ok := b.totals()
	require.True(t, ok)
	assert.Zero(t, held)
}

// retryShouldRetry is a Classifier that, as the Stainless SDKs do, retries
// whatever the server says to retry, a 2xx too.
func retryShouldRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if resp != nil && resp.Header.Get("X-Should-Retry") == "true" {
		return true, nil
	}
	return DefaultClassifier(ctx, resp, err)
}

// A Retrier placed below the Budget (not the recommended order) whose
// Classifier retries a 2xx sent the request again on the Budget's one
// reservation: the provider billed the 2xx, and each retry. The Limit
// must hold: the answer billed is not written again on its reservation.
func TestBudgetLimitHoldsAgainstARetrierBelowItRetryingA2xx(t *testing.T) {
	url, billed, reads := billEveryRead(t)
	limit := 2 * reservation(writeOnceBody, 5)
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, Classify: retryShouldRetry})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, b, r)}

	resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	assert.Equal(t, http.StatusOK, resp.StatusCode, "the caller gets the answer billed")
	assertBilledWithin(t, b, billed, reads, limit)
}

// A Retrier placed below the Budget whose AttemptTimeout fired as a 2xx
// came in discarded it and sent the request again on the Budget's one
// reservation, though the provider had billed the answer. The race is
// forced by a layer that returns the answer only once the attempt's
// context has ended.
func TestBudgetLimitHoldsAgainstARetrierBelowItCuttingAnAnswerAtItsAttemptTimeout(t *testing.T) {
	url, billed, reads := billEveryRead(t)
	limit := 2 * reservation(writeOnceBody, 5)
	b, r, base := newBudgetOverTimedRetrier(t, limit)
	late := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			<-req.Context().Done() // the answer comes in as the attempt times out
			return resp, err
		})
	})
	client := &http.Client{Transport: Chain(base, b, r, late)}

	_, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.ErrorIs(t, err, ErrAttemptTimeout)

	assertBilledWithin(t, b, billed, reads, limit)
}

// The same race, lost the other way: net/http's HTTP/1 transport, its
// context ended as the answer's headers came in, returns the context's
// error rather than the answer it read (both were ready). The answer had
// begun (its first byte read), so the provider may have billed it, though
// no one read its status; the Retrier below sent the request again on
// the Budget's one reservation.
func TestBudgetLimitHoldsAgainstARetrierBelowItTimingOutAnAnswerBegun(t *testing.T) {
	url, billed, reads := billEveryRead(t)
	limit := 2 * reservation(writeOnceBody, 5)
	b, r, base := newBudgetOverTimedRetrier(t, limit)
	lost := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			if err != nil {
				return nil, err
			}
			<-req.Context().Done()
			resp.Body.Close()
			return nil, context.Cause(req.Context())
		})
	})
	client := &http.Client{Transport: Chain(base, b, r, lost)}

	_, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.ErrorIs(t, err, ErrAttemptTimeout)

	assertBilledWithin(t, b, billed, reads, limit)
}

// traceOverride is a context whose ClientTrace is t alone.
type traceOverride struct {
	context.Context
	t *httptrace.ClientTrace
}

func (c traceOverride) Value(key any) any {
	if key == clientTraceKey {
		return c.t
	}
	return c.Context.Value(key)
}

// net/http's HTTP/2 transport returns a request's error as soon as its
// context ends, while its stream stays open until the request's writer
// cleans it up: a HEADERS frame the read loop takes meanwhile reports the
// answer's first byte after RoundTrip returned. A Retrier below the Budget
// whose AttemptTimeout ended a write the provider billed told the Budget
// of its discarded outcome before that byte came: the write was then
// unanswered, but the late byte made it look answered when the Retrier
// asked for the body again, and the request was written, and billed,
// again on the one reservation (seen in
// TestBudgetLimitHoldsInEveryStackOrderAcrossFaults over HTTP/2 on a
// loaded machine: an attempt billed $0.000228 on a $0.000114
// reservation). The race is forced by layers that hold the first byte
// back and report it as the Retrier asks for the body again.
func TestBudgetLimitHoldsAgainstARetrierBelowItHearingAnAnswerLate(t *testing.T) {
	url, billed, reads := billEveryRead(t)
	limit := reservation(writeOnceBody, 5) * 3 / 2
	b, r, base := newBudgetOverTimedRetrier(t, limit)
	var pending atomic.Pointer[httptrace.ClientTrace] // the trace whose first byte is held back
	var asks atomic.Int32
	late := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			trace := httptrace.ContextClientTrace(req.Context())
			held := *trace
			held.GotFirstResponseByte = func() {}
			resp, err := next.RoundTrip(req.WithContext(traceOverride{req.Context(), &held}))
			if err != nil {
				return nil, err
			}
			<-req.Context().Done() // the attempt times out as the answer comes in
			resp.Body.Close()
			pending.Store(trace)
			return nil, context.Cause(req.Context())
		})
	})
	asked := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			r := *req
			getBody := req.GetBody
			r.GetBody = func() (io.ReadCloser, error) {
				// The Retrier reads a copy to check the body's length after
				// an error, then rewinds it, after telling the Budget of
				// the outcome it discards: the byte comes in between.
				if trace := pending.Load(); trace != nil && asks.Add(1) == 2 {
					trace.GotFirstResponseByte()
				}
				return getBody()
			}
			return next.RoundTrip(&r)
		})
	})
	client := &http.Client{Transport: Chain(base, b, asked, r, late)}

	_, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.ErrorIs(t, err, ErrAttemptTimeout)

	assert.EqualValues(t, 1, reads.Load(), "written once on its reservation")
	assertBilledWithin(t, b, billed, reads, limit)
}

// newBudgetOverTimedRetrier returns a Budget of limit, a Retrier of 3
// retries a millisecond apart whose AttemptTimeout is 20 ms, for a layer
// below the Budget, and a base transport of their own.
func newBudgetOverTimedRetrier(t *testing.T, limit Money) (*Budget, *Retrier, *http.Transport) {
	t.Helper()
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, AttemptTimeout: 20 * time.Millisecond})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return b, r, base
}
