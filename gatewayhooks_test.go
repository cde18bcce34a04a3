package httpguard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests cover the hooks a gateway (cmd/httpguard's proxy) needs to
// answer for each request: whose attempt a charge was, how far a refused
// turn was, and Limiters stacked under one Budget.

type callerKey struct{}

func TestSettlementTiesEachAttemptsChargeToItsCaller(t *testing.T) {
	var calls int
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		answerUsage(3, 4)(w, r, body)
	})
	var mu sync.Mutex
	var callers []any
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) {
		mu.Lock()
		callers = append(callers, s.Request.Context().Value(callerKey{}))
		mu.Unlock()
	}})
	p := DefaultRetryPolicy()
	p.BaseDelay, p.Jitter = time.Millisecond, 0
	r, err := NewRetrier(p)
	require.NoError(t, err)
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, r, b)}

	ctx := context.WithValue(context.Background(), callerKey{}, "caller-1")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp.Body.Close()
	assert.Equal(t, []any{"caller-1", "caller-1"}, callers, "the 503 and the answer, each settled with its caller")
}

func TestRateLimitRefusalTellsHowFarTheTurnIs(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 0.5, Burst: 1, MaxWait: -1}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.ErrorIs(t, err, ErrRateLimited)
	var ra interface{ RetryAfter() time.Duration }
	require.True(t, errors.As(err, &ra), "%v", err)
	assert.Equal(t, 2*time.Second, ra.RetryAfter())
}

func TestLimitersStackedUnderABudgetBothHearTheUsage(t *testing.T) {
	api := newFakeAPI(t, answerUsage(30, 20))
	clk := newFakeClock(moveOn)
	outer, inner := &adjustLog{}, &adjustLog{}
	outerLimiter := newTestLimiter(t, LimitConfig{TokensPerMinute: 10_000, Store: outer.on(newMemoryLimitStore(clk.Now))}, clk)
	innerLimiter := newTestLimiter(t, LimitConfig{TokensPerMinute: 10_000, Store: inner.on(newMemoryLimitStore(clk.Now))}, clk)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	client := &http.Client{Transport: Chain(base, b, outerLimiter, innerLimiter)}

	_, err := send(t, client, api.srv.URL, chatBody("m", 100))
	require.NoError(t, err)
	require.Len(t, outer.adjusted(), 1)
	assert.Equal(t, outer.adjusted(), inner.adjusted(), "both limiters corrected their estimate by the same usage")
	assert.Negative(t, inner.adjusted()[0], "50 tokens used, fewer than the estimate")
}

// adjustLog records the corrections a LimitStore is asked to make.
type adjustLog struct {
	LimitStore
	mu sync.Mutex
	n  []int64
}

func (a *adjustLog) on(s LimitStore) *adjustLog { a.LimitStore = s; return a }

func (a *adjustLog) Adjust(ctx context.Context, key string, toks BucketLimit, n int64) error {
	a.mu.Lock()
	a.n = append(a.n, n)
	a.mu.Unlock()
	return a.LimitStore.Adjust(ctx, key, toks, n)
}

func (a *adjustLog) adjusted() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int64(nil), a.n...)
}
