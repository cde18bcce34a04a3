package httpguard

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is the Limiter's clock in tests. Sleep records the wait, then
// by mode returns at once (the clock stands still), moves the clock on by
// the wait and returns, or blocks until Advance passes the wake time or the
// context ends.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	mode    sleepMode
	slept   []time.Duration
	waiters map[chan struct{}]time.Time
}

type sleepMode int

const (
	standStill sleepMode = iota
	moveOn
	block
)

func newFakeClock(mode sleepMode) *fakeClock {
	return &fakeClock{
		now:     time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		mode:    mode,
		waiters: make(map[chan struct{}]time.Time),
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.slept = append(c.slept, d)
	switch c.mode {
	case standStill:
		c.mu.Unlock()
		return nil
	case moveOn:
		c.now = c.now.Add(d)
		c.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	c.waiters[ch] = c.now.Add(d)
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, ch)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for ch, until := range c.waiters {
		if !until.After(c.now) {
			close(ch)
			delete(c.waiters, ch)
		}
	}
}

func (c *fakeClock) Sleeping() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

func (c *fakeClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.slept)
}

// newTestLimiter makes a Limiter on clk.
func newTestLimiter(t *testing.T, c LimitConfig, clk *fakeClock) *Limiter {
	t.Helper()
	l, err := NewLimiter(c)
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	return l
}

// arrivals records when requests reach a test server, on the fake clock.
type arrivals struct {
	mu    sync.Mutex
	clk   *fakeClock
	times []time.Time
	n     atomic.Int64
}

func (a *arrivals) record() int64 {
	a.mu.Lock()
	a.times = append(a.times, a.clk.Now())
	a.mu.Unlock()
	return a.n.Add(1)
}

func (a *arrivals) Times() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.times)
}

// newLimitedServer starts a loopback server whose handler h gets the
// arrival number (1-based), and a client whose transport goes through l.
func newLimitedServer(t *testing.T, l *Limiter, clk *fakeClock, h func(n int64, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *http.Client, *arrivals) {
	t.Helper()
	a := &arrivals{clk: clk}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.record()
		if h != nil {
			h(n, w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	tr := srv.Client().Transport.(*http.Transport)
	client := &http.Client{Transport: l.Wrap(tr)}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return srv, client, a
}

// getStatus sends a GET through client and returns the status, closing the body.
func getStatus(t *testing.T, ctx context.Context, client *http.Client, u string) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestLimiterSpacesConcurrentCallersAtTheRate(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	const callers = 20
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := getStatus(t, context.Background(), client, srv.URL)
			assert.NoError(t, err)
			assert.Equal(t, http.StatusOK, code)
		}()
	}
	wg.Wait()

	// The clock stood still: the first caller went at once, and the others
	// were given turns exactly 1/10 s apart, whatever order they came in.
	slept := clk.Slept()
	slices.Sort(slept)
	require.Len(t, slept, callers-1)
	for i, d := range slept {
		assert.InDelta(t, float64(time.Duration(i+1)*100*time.Millisecond), float64(d), float64(time.Microsecond), "turn %d", i+1)
	}
	assert.EqualValues(t, callers, hits.n.Load())
}

func TestLimiterFailsFastWhenWaitExceedsMaxWait(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 100 * time.Millisecond}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)

	require.Error(t, err)
	var uerr *url.Error
	assert.ErrorAs(t, err, &uerr)
	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Empty(t, clk.Slept(), "it must fail without sleeping")
	assert.EqualValues(t, 1, hits.n.Load(), "the rejected request must not reach the server")
	assert.EqualValues(t, 1, l.Stats().Rejected)
}

func TestLimiterRejectionGivesBackWhatItTook(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 100 * time.Millisecond}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.ErrorIs(t, err, ErrRateLimited)
	clk.Advance(time.Second)

	// Had the rejected request kept its token, this one would wait 1 s.
	_, err = getStatus(t, context.Background(), client, srv.URL)
	assert.NoError(t, err)
	assert.Empty(t, clk.Slept())
}

func TestLimiterFailsFastWhenWaitExceedsContextDeadline(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 0.1, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = getStatus(t, ctx, client, srv.URL)

	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 1, hits.n.Load())
}

func TestLimiterReturnsContextErrorWhenCanceledWhileWaiting(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := getStatus(t, ctx, client, srv.URL)
		done <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	err = <-done

	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrRateLimited)
	assert.EqualValues(t, 1, hits.n.Load())
	assert.EqualValues(t, 1, l.Stats().Canceled)
}

func TestLimiterGivesBackTheTurnOfACanceledWait(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := getStatus(t, ctx, client, srv.URL)
		done <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		done <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	clk.Advance(time.Second)
	require.NoError(t, <-done)

	// The next turn is 1 s away, not 2 s: the canceled wait gave its back.
	assert.Equal(t, []time.Duration{time.Second, time.Second}, clk.Slept())
}

// retryAfter429 answers the first request with 429 and Retry-After: 2, the
// others with 200.
func retryAfter429(n int64, w http.ResponseWriter, _ *http.Request) {
	if n == 1 {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	io.WriteString(w, "ok")
}

func TestLimiterPausesWholeKeyUntilRetryAfterOf429(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, retryAfter429)
	code, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, code)
	reset := clk.Now().Add(2 * time.Second)

	const others = 5
	var wg sync.WaitGroup
	for range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := getStatus(t, context.Background(), client, srv.URL)
			assert.NoError(t, err)
			assert.Equal(t, http.StatusOK, code)
		}()
	}
	require.Eventually(t, func() bool { return clk.Sleeping() == others }, 5*time.Second, time.Millisecond)
	assert.EqualValues(t, 1, hits.n.Load(), "no request may reach the server during the pause")
	clk.Advance(2 * time.Second)
	wg.Wait()

	times := hits.Times()
	require.Len(t, times, 1+others)
	for _, at := range times[1:] {
		assert.False(t, at.Before(reset), "arrived at %v, before the reset at %v", at, reset)
	}
	assert.EqualValues(t, 1, l.Stats().ServerPauses)
}

func TestLimiterPausesKeyWhenRemainingRequestsIsZero(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", "1.5s")
		}
		io.WriteString(w, "ok")
	})

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Equal(t, []time.Duration{1500 * time.Millisecond}, clk.Slept())
}

func TestLimiterPauseDoesNotStopOtherKeys(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{Key: func(r *http.Request, _ string) string { return r.URL.Path }}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, retryAfter429)

	_, err := getStatus(t, context.Background(), client, srv.URL+"/a")
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/b")
	require.NoError(t, err)

	assert.Empty(t, clk.Slept())
}

func TestLimiterIgnoresServerWhenAsked(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{IgnoreServer: true}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, retryAfter429)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 2, hits.n.Load())
	assert.Zero(t, l.Stats().ServerPauses)
}

func TestLimiterFailsFastWhenServerPauseExceedsMaxWait(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{MaxWait: time.Second}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, retryAfter429)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	_, err = getStatus(t, context.Background(), client, srv.URL)

	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 1, hits.n.Load())
}

// keyRate returns the current request rate of key.
func keyRate(l *Limiter, key string) float64 {
	s := l.store.(*memStore)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return float64(s.keys[key].reqs.Limit())
}

func always429(_ int64, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusTooManyRequests)
}

func TestLimiterKeepsRateOnALone429(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, always429)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Equal(t, 10.0, keyRate(l, modelKey(srv, "")))
	assert.Zero(t, l.Stats().SlowDowns)
}

func TestLimiterLowersRateByBetaOnARepeated429(t *testing.T) {
	clk := newFakeClock(standStill)
	var rates []float64
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, OnThrottle: func(e ThrottleEvent) {
		if e.Reason == ThrottleSlowDown {
			rates = append(rates, e.Rate)
		}
	}}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, always429)

	for range 2 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
		clk.Advance(time.Second)
	}

	assert.Equal(t, []float64{7}, rates)
	assert.InDelta(t, 7, keyRate(l, modelKey(srv, "")), 1e-9)
	assert.EqualValues(t, 1, l.Stats().SlowDowns)
}

func TestLimiterKeepsRateWhen429sAreAMinuteApart(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, always429)

	for range 3 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
		clk.Advance(repeatWindow)
	}

	assert.Zero(t, l.Stats().SlowDowns)
}

func TestLimiterLowersRateAgainOnEachRepeated429(t *testing.T) {
	clk := newFakeClock(standStill)
	var rates []float64
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, OnThrottle: func(e ThrottleEvent) {
		if e.Reason == ThrottleSlowDown {
			rates = append(rates, e.Rate)
		}
	}}, clk)
	var before []float64 // the key's rate when each request arrived
	var srv *httptest.Server
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		before = append(before, keyRate(l, modelKey(srv, "")))
		w.WriteHeader(http.StatusTooManyRequests)
	})

	for range 5 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
		clk.Advance(decreaseHold)
	}

	// The first 429 is alone; each of the next four lowers the rate.
	require.Len(t, rates, 4)
	require.Len(t, before, 5)
	for i := range rates {
		assert.InDelta(t, 0.7*before[i+1], rates[i], 1e-9, "429 #%d", i+2)
		if i > 0 {
			assert.Less(t, rates[i], rates[i-1], "the rate keeps falling while 429s repeat")
		}
	}
}

func TestLimiterLowersRateOnceForA429BurstWithinOneHold(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	s := l.store.(*memStore)
	s.slowDown("k", clk.Now(), clk.Now())
	_, ok := s.slowDown("k", clk.Now(), clk.Now())
	require.True(t, ok)

	// Requests sent within the hold after the decrease met a server window
	// still full of the old rate's traffic: their 429s do not count again.
	var again int
	for range 5 {
		clk.Advance(decreaseHold / 10)
		if _, ok := s.slowDown("k", clk.Now(), clk.Now()); ok {
			again++
		}
	}

	assert.Zero(t, again)
	assert.Greater(t, keyRate(l, "k"), 6.9)
}

func TestLimiterNeverLowersRateBelowMinimum(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, DecreaseFactor: 0.1}, clk)
	s := l.store.(*memStore)

	for range 5 {
		s.slowDown("k", clk.Now(), clk.Now())
		clk.Advance(decreaseHold)
	}

	assert.InDelta(t, DefaultMinRequestsPerSecond, keyRate(l, "k"), 1e-9)
}

func TestLimiterRecoversRateAlongCubicCurveUpToConfigured(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	s := l.store.(*memStore)
	s.slowDown("k", clk.Now(), clk.Now())
	s.slowDown("k", clk.Now(), clk.Now())
	require.InDelta(t, 7, keyRate(l, "k"), 1e-9)
	k := 1.957433820584164 // ∛(10·0.3/0.4) s: back at 10 req/s after K

	rateAfter := func(d time.Duration) float64 {
		clk.Advance(d)
		_, _, _, ok := s.reserve("k", clk.Now(), 0, -1)
		require.True(t, ok)
		return keyRate(l, "k")
	}
	half := rateAfter(time.Duration(k / 2 * float64(time.Second)))
	back := rateAfter(time.Duration(k / 2 * float64(time.Second)))
	later := rateAfter(time.Hour)

	assert.InDelta(t, 10-0.4*(k/2)*(k/2)*(k/2), half, 1e-6, "half way: C·(t−K)³ + Wmax")
	assert.InDelta(t, 10, back, 1e-6)
	assert.Equal(t, 10.0, later, "never above the configured rate")
	assert.False(t, s.keys["k"].adapting)
}

func TestLimiterDropsIdleKeys(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{
		RequestsPerSecond: 100, Burst: 1, IdleTTL: time.Minute,
		Key: func(r *http.Request, _ string) string { return r.URL.Path },
	}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	for i := range 100 {
		_, err := getStatus(t, context.Background(), client, fmt.Sprintf("%s/model-%d", srv.URL, i))
		require.NoError(t, err)
	}
	require.Equal(t, 100, l.Stats().Keys)

	clk.Advance(2 * time.Minute)
	_, err := getStatus(t, context.Background(), client, srv.URL+"/model-new")
	require.NoError(t, err)

	assert.Equal(t, 1, l.Stats().Keys)
}

func TestLimiterKeepsIdleKeyWhilePaused(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{IdleTTL: time.Minute, Key: func(r *http.Request, _ string) string { return r.URL.Path }}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "600")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	_, err := getStatus(t, context.Background(), client, srv.URL+"/paused")
	require.NoError(t, err)

	clk.Advance(2 * time.Minute)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/other")
	require.NoError(t, err)

	assert.Equal(t, 2, l.Stats().Keys, "dropping the paused key would forget the pause")
}

func TestNewLimiterRejectsInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    LimitConfig
		want string
	}{
		{"negative rate", LimitConfig{RequestsPerSecond: -1, Burst: 1}, "RequestsPerSecond"},
		{"NaN rate", LimitConfig{RequestsPerSecond: math.NaN(), Burst: 1}, "RequestsPerSecond"},
		{"infinite rate", LimitConfig{RequestsPerSecond: math.Inf(1), Burst: 1}, "RequestsPerSecond"},
		{"negative burst", LimitConfig{Burst: -2}, "Burst must be >= 0, got -2"},
		{"rate without burst", LimitConfig{RequestsPerSecond: 5}, "Burst must be >= 1"},
		{"negative tokens", LimitConfig{TokensPerMinute: -1}, "TokensPerMinute"},
		{"token limit too small", LimitConfig{TokensPerMinute: 1000}, "TokensPerMinute 1000 is too small"},
		{"token limit too small for max output", LimitConfig{TokensPerMinute: 5000, DefaultMaxOutput: 8000}, "too small"},
		{"max output near the int limit", LimitConfig{TokensPerMinute: 5000, DefaultMaxOutput: math.MaxInt}, "too small"},
		{"negative max wait", LimitConfig{MaxWait: -time.Second}, "MaxWait"},
		{"negative idle TTL", LimitConfig{IdleTTL: -time.Second}, "IdleTTL"},
		{"negative default max output", LimitConfig{DefaultMaxOutput: -1}, "DefaultMaxOutput"},
		{"negative body limit", LimitConfig{MaxBufferedBody: -1}, "MaxBufferedBody"},
		{"beta of one", LimitConfig{DecreaseFactor: 1}, "DecreaseFactor"},
		{"NaN recovery", LimitConfig{RecoveryScale: math.NaN()}, "RecoveryScale"},
		{"negative minimum rate", LimitConfig{MinRequestsPerSecond: -1}, "MinRequestsPerSecond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLimiter(tc.c)
			assert.Nil(t, l)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "httpguard: limiter: ")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNewLimiterAcceptsZeroConfig(t *testing.T) {
	l, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	assert.NotNil(t, l)
}

func TestLimiterReportsWaitsToOnThrottleAndStats(t *testing.T) {
	clk := newFakeClock(standStill)
	var mu sync.Mutex
	var events []ThrottleEvent
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 2, Burst: 1, OnThrottle: func(e ThrottleEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	for range 3 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
	}

	key := strings.TrimPrefix(srv.URL, "http://") + " "
	assert.Equal(t, []ThrottleEvent{
		{Key: key, Reason: ThrottleRequests, Wait: 500 * time.Millisecond},
		{Key: key, Reason: ThrottleRequests, Wait: time.Second},
	}, events)
	st := l.Stats()
	assert.EqualValues(t, 3, st.Requests)
	assert.EqualValues(t, 2, st.Throttled)
	assert.Equal(t, 1500*time.Millisecond, st.Waited)
	assert.Equal(t, 1, st.Keys)
}

// closeTracker is a request body that records whether it was closed.
type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeTracker) Close() error { c.closed.Store(true); return nil }

func TestLimiterClosesRequestBodyWhenRejected(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: time.Millisecond}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	body := &closeTracker{Reader: strings.NewReader("plain text")}
	req, err := http.NewRequest(http.MethodPost, srv.URL, body)
	require.NoError(t, err)

	_, err = l.Wrap(http.DefaultTransport).RoundTrip(req)

	require.ErrorIs(t, err, ErrRateLimited)
	assert.True(t, body.closed.Load())
}

// limChatBody is an OpenAI chat request for model with the given max_tokens
// (none when 0) and a prompt of about promptTokens tokens by the central
// estimate (4 bytes of message JSON per token).
func limChatBody(model string, maxTokens, promptTokens int) string {
	content := strings.Repeat("a", max(promptTokens*4-30, 1))
	b := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]`, model, content)
	if maxTokens > 0 {
		b += fmt.Sprintf(`,"max_tokens":%d`, maxTokens)
	}
	return b + "}"
}

// post sends body as JSON through client and returns the response, body
// unread; the caller closes it.
func limPost(t *testing.T, client *http.Client, u, body string) *http.Response {
	t.Helper()
	resp, err := client.Post(u, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	return resp
}

// limPostRead sends body as JSON, reads the whole answer and closes it.
func limPostRead(t *testing.T, client *http.Client, u, body string) {
	t.Helper()
	resp := limPost(t, client, u, body)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// limAnswerUsage answers every request with a chat completion reporting the
// given usage.
func limAnswerUsage(prompt, completion int) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			prompt, completion, prompt+completion)
	}
}

// available returns the tokens key could spend now: the bucket plus the
// refunds not yet used.
func available(t *testing.T, l *Limiter, key string, now time.Time) float64 {
	t.Helper()
	s := l.store.(*memStore)
	s.mu.RLock()
	ks := s.keys[key]
	s.mu.RUnlock()
	require.NotNil(t, ks, "key %q", key)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return min(ks.toks.TokensAt(now)+float64(ks.credit), float64(ks.toks.Burst()))
}

func modelKey(srv *httptest.Server, model string) string {
	return strings.TrimPrefix(srv.URL, "http://") + " " + model
}

func TestLimiterTakesPromptAndMaxOutputFromTokenBucket(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil) // answers carry no usage

	limPostRead(t, client, srv.URL, limChatBody("m", 2000, 500))

	assert.InDelta(t, 60_000-2000-500, available(t, l, modelKey(srv, "m"), clk.Now()), 2)
}

func TestLimiterAssumesDefaultMaxOutputWhenRequestSetsNone(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000, DefaultMaxOutput: 3000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	limPostRead(t, client, srv.URL, limChatBody("m", 0, 500))

	assert.InDelta(t, 60_000-3000-500, available(t, l, modelKey(srv, "m"), clk.Now()), 2)
}

func TestLimiterRefundsOverestimateOnceUsageIsRead(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(100, 50))
	key := modelKey(srv, "m")

	resp := limPost(t, client, srv.URL, limChatBody("m", 4000, 500))
	before := available(t, l, key, clk.Now())
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	assert.InDelta(t, 60_000-4000-500, before, 2, "the estimate is held until the usage is known")
	assert.InDelta(t, 60_000-150, available(t, l, key, clk.Now()), 1e-6)
}

func TestLimiterTakesUnderestimateOnceUsageIsRead(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(1000, 9000))

	limPostRead(t, client, srv.URL, limChatBody("m", 100, 500))

	assert.InDelta(t, 60_000-10_000, available(t, l, modelKey(srv, "m"), clk.Now()), 1e-6)
}

func TestLimiterKeepsEstimateWhenAnswerHasNoUsage(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[]}`)
	})

	limPostRead(t, client, srv.URL, limChatBody("m", 4000, 500))

	assert.InDelta(t, 60_000-4500, available(t, l, modelKey(srv, "m"), clk.Now()), 2)
}

func TestLimiterLetsNextRequestUseRefundedTokens(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(10, 10))

	limPostRead(t, client, srv.URL, limChatBody("m", 5000, 100))
	limPostRead(t, client, srv.URL, limChatBody("m", 5000, 100))

	assert.Empty(t, clk.Slept(), "without the refund the second request would wait ~50 s")
}

func TestLimiterMakesNextRequestWaitForUnderestimatedTokens(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk) // 100 tokens/s
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(100, 5900))

	limPostRead(t, client, srv.URL, limChatBody("m", 100, 100))
	limPostRead(t, client, srv.URL, limChatBody("m", 900, 100))

	// The first used the whole minute; the second needs 1000 tokens: 10 s.
	require.Len(t, clk.Slept(), 1)
	assert.InDelta(t, float64(10*time.Second), float64(clk.Slept()[0]), float64(100*time.Millisecond))
}

func TestLimiterKeysTokensByModel(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	limPostRead(t, client, srv.URL, limChatBody("a", 5000, 100))
	limPostRead(t, client, srv.URL, limChatBody("b", 5000, 100))

	assert.Empty(t, clk.Slept())
	assert.Equal(t, 2, l.Stats().Keys)
}

func TestLimiterRejectsAtOnceWhenTokensWouldTakeTooLong(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000, MaxWait: time.Second}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	limPostRead(t, client, srv.URL, limChatBody("m", 5000, 100))

	_, err := client.Post(srv.URL, "application/json", strings.NewReader(limChatBody("m", 5000, 100)))

	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 1, hits.n.Load())
}

func TestLimiterSendsBodyByteForByte(t *testing.T) {
	body := "{ \"model\" : \"m\",\n\t\"messages\":[{\"role\":\"user\",\"content\":\"héllo \\u00e9 \\\"quoted\\\"\"}],\"max_tokens\":7 }  "
	for _, tc := range []struct {
		name    string
		getBody bool
	}{{"with GetBody", true}, {"without GetBody", false}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(standStill)
			l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000, RequestsPerSecond: 10, Burst: 1}, clk)
			var got []byte
			var gotLen int64
			srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
				got, _ = io.ReadAll(r.Body)
				gotLen = r.ContentLength
			})
			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			if !tc.getBody {
				req.GetBody = nil
				req.Body = io.NopCloser(req.Body)
			}

			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()

			assert.Equal(t, body, string(got))
			assert.EqualValues(t, len(body), gotLen)
			assert.Equal(t, 1, l.Stats().Keys)
		})
	}
}

func TestLimiterSendsLongBodyWholeWithoutEstimating(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000, MaxBufferedBody: 64}, clk)
	var got string
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
	})
	body := limChatBody("m", 10, 1000)
	req, err := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")

	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()

	assert.Equal(t, body, got)
	assert.InDelta(t, 0, available(t, l, modelKey(srv, ""), clk.Now()), 1e-6, "too long to read: counted as a whole minute of tokens")
}

func TestLimiterLeavesCallersRequestUnchanged(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, _, _ := newLimitedServer(t, l, clk, nil)
	req, err := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader(limChatBody("m", 10, 10))))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	orig := *req
	origHeader := req.Header.Clone()

	resp, err := l.Wrap(srv.Client().Transport).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()

	assert.Equal(t, origHeader, req.Header)
	assert.Nil(t, req.GetBody)
	assert.Equal(t, orig.ContentLength, req.ContentLength)
	assert.Equal(t, orig.URL, req.URL)
}

func TestLimiterCorrectsTokensFromStreamUsage(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"+
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":60,\"total_tokens\":100}}\n\n"+
			"data: [DONE]\n\n")
	})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}`

	limPostRead(t, client, srv.URL, body)

	assert.InDelta(t, 60_000-100, available(t, l, modelKey(srv, "m"), clk.Now()), 1e-6)
}

// FuzzLimiterFollowsServer feeds the Limiter's server-following path
// arbitrary rate-limit headers: it must not panic, and a key's wait must
// stay finite and non-negative.
func FuzzLimiterFollowsServer(f *testing.F) {
	f.Add(true, "2", "", "")
	f.Add(true, "Wed, 21 Oct 2015 07:28:00 GMT", "0", "6m0s")
	f.Add(false, "", "0", "20ms")
	f.Add(false, "", "-1", "1e309s")
	f.Add(true, "99999999999999999999", "0", "-5s")
	f.Fuzz(func(t *testing.T, tooMany bool, retryAfter, remaining, reset string) {
		clk := newFakeClock(standStill)
		l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 2}, clk)
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody}
		if tooMany {
			resp.StatusCode = http.StatusTooManyRequests
		}
		resp.Header.Set("Retry-After", retryAfter)
		resp.Header.Set("X-Ratelimit-Remaining-Requests", remaining)
		resp.Header.Set("X-Ratelimit-Reset-Requests", reset)
		resp.Header.Set("Anthropic-Ratelimit-Tokens-Remaining", remaining)
		resp.Header.Set("Anthropic-Ratelimit-Tokens-Reset", reset)

		l.observe("k", ticket{}, resp, clk.Now())
		_, wait, _, _ := l.store.reserve("k", clk.Now(), 0, -1)

		assert.GreaterOrEqual(t, wait, time.Duration(0))
		assert.LessOrEqual(t, wait, maxHeaderWait)
		assert.GreaterOrEqual(t, keyRate(l, "k"), DefaultMinRequestsPerSecond)
	})
}

func TestLimiterPacesEveryAttemptOfARetrierOutside(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	srv, _, hits := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	// A stand-in for the Retrier: three attempts, whatever the answer.
	retry := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return limRoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			var resp *http.Response
			var err error
			for range 3 {
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if resp, err = next.RoundTrip(req); err != nil {
					return nil, err
				}
			}
			return resp, nil
		})
	})
	tr := srv.Client().Transport.(*http.Transport)
	client := &http.Client{Transport: Chain(tr, retry, l)}

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.EqualValues(t, 3, hits.n.Load())
	assert.EqualValues(t, 3, l.Stats().Requests)
	require.Len(t, clk.Slept(), 2, "the retries waited their turns")
	assert.InDelta(t, float64(100*time.Millisecond), float64(clk.Slept()[0]), float64(time.Microsecond))
	assert.InDelta(t, float64(200*time.Millisecond), float64(clk.Slept()[1]), float64(time.Microsecond))
}

type limRoundTripperFunc func(*http.Request) (*http.Response, error)

func (f limRoundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLimiterRejectionIsNotRetriedByRetrier(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 100 * time.Millisecond}, clk)
	var retries atomic.Int64
	retrier, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, OnRetry: func(RetryEvent) { retries.Add(1) }})
	require.NoError(t, err)
	srv, _, hits := newLimitedServer(t, l, clk, nil)
	tr := srv.Client().Transport.(*http.Transport)
	client := &http.Client{Transport: Chain(tr, retrier, l)}
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	_, err = getStatus(t, context.Background(), client, srv.URL)

	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Zero(t, retries.Load())
	assert.EqualValues(t, 1, hits.n.Load())
	assert.EqualValues(t, 2, l.Stats().Requests)
}

func TestLimiterForwardsCloseIdleConnections(t *testing.T) {
	l, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	base := &idleCounter{} // from transport_test.go
	client := &http.Client{Transport: l.Wrap(base)}

	client.CloseIdleConnections()

	assert.Equal(t, 1, base.closed)
}

func TestLimiterAccountsTokensOfConcurrentCallers(t *testing.T) {
	clk := newFakeClock(standStill)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000, RequestsPerSecond: 1000, Burst: 100}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, limAnswerUsage(10, 5))

	const callers = 20
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(srv.URL, "application/json", strings.NewReader(limChatBody("m", 100, 10)))
			if assert.NoError(t, err) {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()

	assert.EqualValues(t, callers, hits.n.Load())
	assert.Empty(t, clk.Slept())
	assert.InDelta(t, 60_000-callers*15, available(t, l, modelKey(srv, "m"), clk.Now()), 1e-6,
		"every estimate was corrected to its usage")
}

func TestWaitingForATurnDoesNotCountAgainstTheAttemptTimeout(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, "ok") })
	limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 10, Burst: 1}) // real clock: the second request waits 100ms
	require.NoError(t, err)
	p := DefaultRetryPolicy()
	p.AttemptTimeout = 30 * time.Millisecond
	var retries atomic.Int64
	p.OnRetry = func(RetryEvent) { retries.Add(1) }
	retrier, err := NewRetrier(p)
	require.NoError(t, err)
	c := clientFor(t, retrier, limiter)
	for range 2 {
		resp, body := get(t, c, s.URL)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "ok", body)
	}
	assert.Zero(t, retries.Load(), "no attempt timed out while queued")
	assert.EqualValues(t, 2, s.hits.Load())
}
