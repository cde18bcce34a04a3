package httpguard

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fallback placed below the Budget (not the recommended order) whose
// next target maps the request's model to a dearer one sent the request
// there on the reservation the Budget made at the model the body names:
// the next target billed the dearer model's prices, which the Budget
// charged at the cheaper one's (its answer naming no model), and past
// the Limit. The same with Azure OpenAI, which runs the deployment the
// path names: a next target whose BaseURL names another deployment,
// priced dearer, ran the request there on the reservation the Budget made
// at the primary's. The Limit must hold, and every bill be charged.
func TestFallbackBelowABudgetDoesNotSendAnotherModelOnItsReservation(t *testing.T) {
	prices := PriceTable{"m": {Input: Dollar, Output: 2 * Dollar}, "dear": {Input: 3 * Dollar, Output: 7 * Dollar}}
	for _, c := range []struct {
		name string
		// primary and second are the targets' paths below their hosts;
		// path, the request's below the primary's host.
		primary, second, path string
		models                map[string]string
		model                 func(r *http.Request, cr chatRequest) string // what the second target runs
	}{
		{"Models", "/v1", "/v1", "/v1/chat/completions", map[string]string{"m": "dear"},
			func(_ *http.Request, cr chatRequest) string { return cr.Model }},
		{"deployment", "/openai/deployments/m", "/openai/deployments/dear", "/openai/deployments/m/chat/completions", nil,
			func(r *http.Request, _ chatRequest) string { return strings.Split(r.URL.Path, "/")[3] }}, // /openai/deployments/{name}/chat/completions
	} {
		t.Run(c.name, func(t *testing.T) {
			primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.ReadAll(r.Body)
				w.WriteHeader(http.StatusServiceUnavailable) // not billed
			}))
			t.Cleanup(primary.Close)
			var billed, reads atomic.Int64
			second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				reads.Add(1)
				cr, err := parseChatRequest(b)
				require.NoError(t, err)
				p := prices[c.model(r, cr)]
				billed.Add(int64(Money(len(b))*p.Input/1_000_000 + Money(cr.MaxOutput)*p.Output/1_000_000))
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(b), cr.MaxOutput)
			}))
			t.Cleanup(second.Close)
			limit := 2 * reservation(writeOnceBody, 5)
			b := newTestBudget(t, BudgetConfig{Limit: limit, Prices: prices})
			f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + c.primary},
				{Name: "second", BaseURL: second.URL + c.second, Models: c.models}}})
			require.NoError(t, err)
			base := &http.Transport{}
			t.Cleanup(base.CloseIdleConnections)
			client := &http.Client{Transport: Chain(base, b, f)}

			resp, err := client.Post(primary.URL+c.path, "application/json", strings.NewReader(writeOnceBody))
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			require.NoError(t, resp.Body.Close())

			t.Logf("status %d from %s", resp.StatusCode, resp.Header.Get(TargetHeader))
			assertBilledWithin(t, b, &billed, &reads, limit)
			assert.Zero(t, reads.Load(), "the dearer model is not asked on the cheaper one's reservation")
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the caller gets the primary's answer")
		})
	}
}

// A Fallback placed below the Budget gave the request it sent a next
// target a GetBody of its own, which a Retrier below it (or net/http)
// called to send the request again after a write lost: the Budget's
// GetBody, which fails once a write got no answer, was never asked, and
// each write went on the Budget's one reservation.
func TestFallbackBelowABudgetSendsTheNextTargetNoMoreThanItsReservation(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.WriteHeader(http.StatusServiceUnavailable) // not billed
	}))
	t.Cleanup(primary.Close)
	var billed, reads atomic.Int64
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		reads.Add(1)
		billed.Add(int64(reservation(string(b), 5)))
		panic(http.ErrAbortHandler) // read whole, then the connection is cut
	}))
	second.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(second.Close)
	limit := 2 * reservation(writeOnceBody, 5)
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {Name: "second", BaseURL: second.URL + "/v1"}}})
	require.NoError(t, err)
	r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, b, f, r)}

	_, err = client.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.Error(t, err)

	t.Logf("the second target read the request %d times; billed %v, charged %v, limit %v", reads.Load(), Money(billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider may bill no more than the Limit")
	_, held, ok := b.totals()
	require.True(t, ok)
	assert.Zero(t, held)
}

// A Fallback placed below the Budget moved to the next target after the
// primary's answer had begun and was lost unread (a Retrier's
// AttemptTimeout ended it as its headers came in, and net/http returned
// the context's error): the primary may have billed it, and the request
// went to the next target on the Budget's one reservation.
func TestFallbackBelowABudgetDoesNotMoveOnAfterAnAnswerBegun(t *testing.T) {
	var billed, reads atomic.Int64
	bill := func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		reads.Add(1)
		billed.Add(int64(reservation(string(b), 5)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(b))
	}
	primary := httptest.NewServer(http.HandlerFunc(bill))
	t.Cleanup(primary.Close)
	second := httptest.NewServer(http.HandlerFunc(bill))
	t.Cleanup(second.Close)
	limit := reservation(writeOnceBody, 5) * 3 / 2
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {Name: "second", BaseURL: second.URL + "/v1"}}})
	require.NoError(t, err)
	r, err := NewRetrier(RetryPolicy{AttemptTimeout: 20 * time.Millisecond})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	lost := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			if err != nil || req.URL.Host != strings.TrimPrefix(primary.URL, "http://") {
				return resp, err
			}
			<-req.Context().Done() // the primary's answer comes in as the attempt times out
			resp.Body.Close()
			return nil, context.Cause(req.Context())
		})
	})
	client := &http.Client{Transport: Chain(base, b, f, r, lost)}

	resp, err := client.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	t.Logf("err %v; the servers read the request %d times; billed %v, charged %v, limit %v", err, reads.Load(), Money(billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the providers may bill no more than the Limit")
	_, held, ok := b.totals()
	require.True(t, ok)
	assert.Zero(t, held)
}

// A refusal below the Fallback (an open circuit) sent nothing: after it
// the next target may still have the request on the Budget's
// reservation, even when an earlier exchange of the attempt was answered
// (a 503 the Retrier below retried).
func TestFallbackBelowABudgetMovesOnAfterARefusal(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.WriteHeader(http.StatusServiceUnavailable) // not billed
	}))
	t.Cleanup(primary.Close)
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answerUsage(1, 1)(w, r, nil)
	}))
	t.Cleanup(second.Close)
	b := newTestBudget(t, BudgetConfig{Limit: 2 * reservation(writeOnceBody, 5)})
	f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {Name: "second", BaseURL: second.URL + "/v1"}}})
	require.NoError(t, err)
	r, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	var calls atomic.Int64
	opens := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Host == strings.TrimPrefix(primary.URL, "http://") && calls.Add(1) > 1 {
				closeRequestBody(req)
				return nil, Refuse(fmt.Errorf("test: %w", ErrCircuitOpen)) // the 503 opened it
			}
			return next.RoundTrip(req)
		})
	})
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, b, f, r, opens)}

	resp, err := client.Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
}
