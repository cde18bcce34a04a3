package httpguard

import (
	"bytes"
	"context"
	"errors"
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
// by mode moves the clock on by the wait and returns (for one goroutine at
// a time), or blocks until Advance or Drive passes the wake time or the
// context ends.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	mode    sleepMode
	slept   []time.Duration
	waiters map[chan struct{}]fakeSleeper
}

// fakeSleeper is a request asleep on a fakeClock: until the time it wakes
// at, or until wake is closed (nil never is).
type fakeSleeper struct {
	until time.Time
	wake  <-chan struct{}
}

// woken reports whether the Limiter has woken s: it is no longer asleep
// from the moment the Limiter closes wake, though its goroutine may not
// have run yet, so that Drive never moves the clock on while it is
// between sleeps.
func (s fakeSleeper) woken() bool {
	select {
	case <-s.wake:
		return true
	default:
		return false
	}
}

type sleepMode int

const (
	moveOn sleepMode = iota
	block
)

func newFakeClock(mode sleepMode) *fakeClock {
	return &fakeClock{
		now:     time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		mode:    mode,
		waiters: make(map[chan struct{}]fakeSleeper),
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep is the Limiter's sleep (see sleepQueued) on the fake clock.
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) (woken bool, err error) {
	c.mu.Lock()
	c.slept = append(c.slept, d)
	s := fakeSleeper{until: c.now.Add(d), wake: wake}
	if s.woken() {
		c.mu.Unlock()
		return ctx.Err() == nil, ctx.Err()
	}
	if c.mode == moveOn {
		c.now = s.until
		c.mu.Unlock()
		return false, nil
	}
	ch := make(chan struct{})
	c.waiters[ch] = s
	c.mu.Unlock()
	select {
	case <-ch:
		return false, nil
	case <-wake:
		woken = ctx.Err() == nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	delete(c.waiters, ch)
	c.mu.Unlock()
	return woken, ctx.Err()
}

// Advance moves the clock on by d, waking the sleepers due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceTo(c.now.Add(d))
}

func (c *fakeClock) advanceTo(t time.Time) {
	c.now = t
	for ch, s := range c.waiters {
		if !s.until.After(c.now) && !s.woken() {
			close(ch)
			delete(c.waiters, ch)
		}
	}
}

// Sleeping is how many requests are asleep: not those the Limiter has
// woken, which are about to sleep again or go.
func (c *fakeClock) Sleeping() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.waiters {
		if !s.woken() {
			n++
		}
	}
	return n
}

func (c *fakeClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.slept)
}

// Drive runs n goroutines' sleeps in simulated time: whenever each is
// asleep or done (done counts those done), it moves the clock to the
// earliest wake time, until all are done.
func (c *fakeClock) Drive(t *testing.T, n int, done *atomic.Int64) {
	t.Helper()
	for {
		require.Eventually(t, func() bool { return c.Sleeping()+int(done.Load()) == n }, 5*time.Second, 50*time.Microsecond)
		if done.Load() == int64(n) {
			return
		}
		c.mu.Lock()
		next := time.Time{}
		for _, s := range c.waiters {
			if !s.woken() && (next.IsZero() || s.until.Before(next)) {
				next = s.until
			}
		}
		c.advanceTo(next)
		c.mu.Unlock()
	}
}

// newTestLimiter makes a Limiter on clk, with a memory store on clk unless
// c names a store.
func newTestLimiter(t *testing.T, c LimitConfig, clk *fakeClock) *Limiter {
	t.Helper()
	if c.Store == nil {
		c.Store = newMemoryLimitStore(clk.Now)
	}
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

// gaps returns the time between consecutive arrivals from the i-th on.
func (a *arrivals) gaps(from int) []time.Duration {
	times := a.Times()
	var out []time.Duration
	for i := max(from, 1); i < len(times); i++ {
		out = append(out, times[i].Sub(times[i-1]))
	}
	return out
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
	return sendStatus(t, ctx, client, http.MethodGet, u, nil)
}

// sendStatus sends a request through client and returns the status,
// reading and closing the body.
func sendStatus(t *testing.T, ctx context.Context, client *http.Client, method, u string, body io.Reader) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	require.NoError(t, err)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// getConcurrently sends n GETs at once through client and drives clk until
// all are answered.
func getConcurrently(t *testing.T, clk *fakeClock, client *http.Client, u string, n int) {
	t.Helper()
	var done atomic.Int64
	for range n {
		go func() {
			defer done.Add(1)
			_, err := getStatus(t, context.Background(), client, u)
			assert.NoError(t, err)
		}()
	}
	clk.Drive(t, n, &done)
}

// limKey returns the state of the Limiter's key for host and model, made
// as a request would make it.
func limKey(t *testing.T, l *Limiter, host, model string) *keyState {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/", nil)
	require.NoError(t, err)
	return l.key(req, model, false, l.now())
}

func keyName(srv *httptest.Server, model string) string {
	return strings.TrimPrefix(srv.URL, "http://") + " " + model
}

// keyRate returns the current request rate of srv's key.
func keyRate(t *testing.T, l *Limiter, srv *httptest.Server) float64 {
	t.Helper()
	ks := limKey(t, l, strings.TrimPrefix(srv.URL, "http://"), "")
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.rate
}

func TestLimiterSpacesConcurrentCallersAtTheRate(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	getConcurrently(t, clk, client, srv.URL, 20)

	// The first caller went at once, the others exactly 1/10 s apart,
	// whatever order they came in.
	require.EqualValues(t, 20, hits.n.Load())
	for i, gap := range hits.gaps(1) {
		assert.Equal(t, 100*time.Millisecond, gap, "turn %d", i+2)
	}
}

func TestLimiterLetsABurstGoAtOnceThenSpacesTheRest(t *testing.T) {
	for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
		"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(block)
			l := newLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 3}, clk)
			srv, client, hits := newLimitedServer(t, l, clk, nil)

			getConcurrently(t, clk, client, srv.URL, 6)

			assert.Equal(t, []time.Duration{0, 0, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}, hits.gaps(1))
		})
	}
}

// newOwnLimiter is newTestLimiter with the Limiter's own store (the
// default), on clk: turns are then taken without the key's mutex when
// nobody is queued and the rate is not lowered.
func newOwnLimiter(t *testing.T, c LimitConfig, clk *fakeClock) *Limiter {
	t.Helper()
	l, err := NewLimiter(c)
	require.NoError(t, err)
	require.True(t, l.ownStore())
	l.now, l.sleep = clk.Now, clk.Sleep
	return l
}

// While a 429 holds a key's rate down the key sends no bursts: requests
// that arrive together go one by one at the lowered rate, though the
// bucket (Burst 5) has room for them all.
func TestLimiterWithItsOwnStoreSendsNoBurstWhileItsRateIsLowered(t *testing.T) {
	clk := newFakeClock(block)
	l := newOwnLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 5}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	})
	status, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status)
	clk.Advance(200 * time.Millisecond) // past the first turn at the lowered rate (7/s), which is still recovering

	getConcurrently(t, clk, client, srv.URL, 4)

	gaps := hits.gaps(2)
	require.Len(t, gaps, 3)
	for i, gap := range gaps {
		assert.Greater(t, gap, 100*time.Millisecond, "turn %d after the 429: spaced below the configured rate", i+2)
	}
}

func TestLimitersSharingAStoreShareTheRate(t *testing.T) {
	clk := newFakeClock(moveOn)
	store := newMemoryLimitStore(clk.Now)
	a := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: store}, clk)
	b := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: store}, clk)
	srv, clientA, _ := newLimitedServer(t, a, clk, nil)
	clientB := &http.Client{Transport: b.Wrap(srv.Client().Transport)}

	_, err := getStatus(t, context.Background(), clientA, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), clientB, srv.URL)
	require.NoError(t, err)

	assert.Equal(t, []time.Duration{100 * time.Millisecond}, clk.Slept(), "b waited for the turn a took")
}

// countingStore counts the Takes it passes to the store it wraps.
type countingStore struct {
	LimitStore
	takes atomic.Int64
}

func (c *countingStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	c.takes.Add(1)
	return c.LimitStore.Take(ctx, key, reqs, toks, n)
}

// A caller above (a Fallback, a gateway's 429) tells a pause the server
// asked for from the Limiter's own pace by the refusal's Reason, in every
// process sharing the store, not only in the one that got the 429.
func TestLimiterRefusalBehindAPauseAnotherProcessHeardNamesThePause(t *testing.T) {
	clk := newFakeClock(block)
	store := newMemoryLimitStore(clk.Now)
	a := newTestLimiter(t, LimitConfig{Store: store}, clk)
	b := newTestLimiter(t, LimitConfig{Store: store}, clk)
	srv, clientA, _ := newLimitedServer(t, a, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	clientB := &http.Client{Transport: b.Wrap(srv.Client().Transport)}
	_, err := getStatus(t, context.Background(), clientA, srv.URL)
	require.NoError(t, err)
	var done atomic.Int64
	go func() { // queued in b for the end of the pause
		defer done.Add(1)
		_, err := getStatus(t, context.Background(), clientB, srv.URL)
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = getStatus(t, ctx, clientB, srv.URL)

	var le *LimitError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, ThrottlePaused, le.Reason, "b has no requests bucket: %v", err)
	assert.True(t, limitedByServer(err), "a Fallback above moves it")
	clk.Drive(t, 1, &done)
}

func TestLimiterQueueMovesBackWhenAnotherProcessTookATurn(t *testing.T) {
	clk := newFakeClock(block)
	shared := newMemoryLimitStore(clk.Now)
	store := &countingStore{LimitStore: shared}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: store}, clk)
	ks := limKey(t, l, "h", "m")
	turn := func(p *place) time.Duration {
		wait, _, err := l.turn(context.Background(), ks, p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
		return wait
	}
	var p1, p2, p3 place
	require.Zero(t, turn(&p1))
	require.Equal(t, 100*time.Millisecond, turn(&p2))
	require.Equal(t, 200*time.Millisecond, turn(&p3))

	// Another process sharing the store takes the turn p2 was queued for.
	clk.Advance(100 * time.Millisecond)
	wait, _, err := shared.Take(context.Background(), "h m", BucketLimit{Rate: 10, Burst: 1}, BucketLimit{}, 0)
	require.NoError(t, err)
	require.Zero(t, wait)

	takes := store.takes.Load()
	assert.Equal(t, 100*time.Millisecond, turn(&p2), "p2 keeps its place, a turn later")
	clk.Advance(100 * time.Millisecond)
	assert.Equal(t, 100*time.Millisecond, turn(&p3), "p3 moved back with the queue")
	assert.Equal(t, takes+1, store.takes.Load(), "p3 did not ask the store in vain")
	assert.Zero(t, turn(&p2))
	clk.Advance(100 * time.Millisecond)
	assert.Zero(t, turn(&p3))
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
	assert.True(t, IsRefusal(err))
	assert.Empty(t, clk.Slept(), "it must fail without sleeping")
	assert.EqualValues(t, 1, hits.n.Load(), "the rejected request must not reach the server")
	assert.EqualValues(t, 1, l.Stats().Rejected)
}

func TestLimiterRefusalSaysWhichBucketRefusedAndRoundsTheWait(t *testing.T) {
	for _, tc := range []struct {
		name          string
		c             LimitConfig
		first, second string // request bodies; "" sends a GET
		want          string
		reason        ThrottleReason
		tokens        int64
		wait          time.Duration
	}{
		{"requests", LimitConfig{RequestsPerSecond: 3, Burst: 1}, "", "",
			"rate limited by the requests bucket: the turn is 333ms away, more than the 100ms allowed",
			ThrottleRequests, 0, time.Second / 3},
		{"tokens", LimitConfig{TokensPerMinute: 6000}, limChatBody("m", 5990, 10), limChatBody("m", 1000, 10),
			"rate limited by the tokens bucket (the request is estimated at 1010 tokens): the turn is 10.1s away, more than the 100ms allowed",
			ThrottleTokens, 1010, 10100 * time.Millisecond},
		{"server pause", LimitConfig{}, "", "",
			"rate limited by a pause the server asked for: the turn is 7s away, more than the 100ms allowed",
			ThrottlePaused, 0, 7 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(block)
			tc.c.MaxWait = 100 * time.Millisecond
			tc.c.Key = func(*http.Request, string) string { return "k" }
			l := newTestLimiter(t, tc.c, clk)
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if tc.name == "server pause" {
					w.Header().Set("Retry-After", "7")
					w.WriteHeader(http.StatusTooManyRequests)
				}
			})
			send := func(body string) error {
				method, r := http.MethodGet, io.Reader(nil)
				if body != "" {
					method, r = http.MethodPost, strings.NewReader(body)
				}
				req, err := http.NewRequest(method, srv.URL, r)
				require.NoError(t, err)
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				return err
			}
			require.NoError(t, send(tc.first))

			err := send(tc.second)

			require.ErrorIs(t, err, ErrRateLimited)
			var uerr *url.Error
			require.ErrorAs(t, err, &uerr)
			assert.Equal(t, `httpguard: limiter: key "k": `+tc.want, uerr.Err.Error())
			var le *LimitError
			require.ErrorAs(t, err, &le, "a caller reads what refused without parsing the message")
			assert.Equal(t, "k", le.Key)
			assert.Equal(t, tc.reason, le.Reason)
			assert.Equal(t, 100*time.Millisecond, le.Allowed)
			assert.InDelta(t, tc.wait, le.Wait, float64(time.Millisecond))
			assert.Equal(t, le.Wait, le.RetryAfter())
			assert.Equal(t, tc.tokens, le.Tokens)
		})
	}
}

func TestLimiterMaxWaitZeroMeansTheDefaultAndNegativeNeverWaits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxWait time.Duration
		rate    float64
		want    string
	}{
		{"zero", 0, 1.0 / 40, "the turn is 40s away, more than the 30s allowed"},
		{"negative", -1, 1000, "the turn is 1ms away, more than the 0s allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(block)
			l := newTestLimiter(t, LimitConfig{RequestsPerSecond: tc.rate, Burst: 1, MaxWait: tc.maxWait}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, nil)
			_, err := getStatus(t, context.Background(), client, srv.URL)
			require.NoError(t, err)

			_, err = getStatus(t, context.Background(), client, srv.URL)

			assert.ErrorIs(t, err, ErrRateLimited)
			assert.ErrorContains(t, err, tc.want)
			assert.Empty(t, clk.Slept())
		})
	}
}

func TestLimiterRejectionGivesBackWhatItTook(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 100 * time.Millisecond}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.ErrorIs(t, err, ErrRateLimited)
	clk.Advance(time.Second)

	// Had the rejected request kept its place, this one would wait 1 s.
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

func TestLimiterGivesBackThePlaceOfACanceledWait(t *testing.T) {
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

	getConcurrently(t, clk, client, srv.URL, 5)

	times := hits.Times()
	require.Len(t, times, 6)
	for _, at := range times[1:] {
		assert.False(t, at.Before(reset), "arrived at %v, before the reset at %v", at, reset)
	}
	assert.EqualValues(t, 1, l.Stats().ServerPauses)
}

func TestLimiterPauseEndsAtTheRateNotInAStampede(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After-Ms", "1000")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	reset := clk.Now().Add(time.Second)

	getConcurrently(t, clk, client, srv.URL, 5)

	// The bucket holds a burst of 10, but after the pause the waiting
	// requests go one by one at the (lowered) rate, as it recovers.
	require.EqualValues(t, 6, hits.n.Load())
	times := hits.Times()
	assert.Equal(t, reset, times[1], "the first went when the pause ended")
	for i := 2; i < len(times); i++ {
		assert.Equal(t, curveInterval(t, l, srv, times[i-1]), times[i].Sub(times[i-1]))
	}
}

// curveInterval is the interval between two requests of srv's key at the
// rate it has at, lowered or recovering.
func curveInterval(t *testing.T, l *Limiter, srv *httptest.Server, at time.Time) time.Duration {
	t.Helper()
	ks := limKey(t, l, strings.TrimPrefix(srv.URL, "http://"), "")
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return BucketLimit{Rate: l.rateAt(ks, at)}.interval()
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
	assert.Zero(t, l.Stats().SlowDowns, "a request answered is no reason to slow down")
}

func TestLimiterCountsAResetFromWhenTheRequestWasSent(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			clk.Advance(400 * time.Millisecond) // the answer took 400ms
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", "1s")
		}
	})

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Equal(t, []time.Duration{600 * time.Millisecond}, clk.Slept())
}

// A reset an answer reports is when the window reopens however long the
// answer took: a time (Anthropic's) is that time, and MaxPause caps the
// pause from the answer, not from when the request was sent.
func TestLimiterPausesUntilTheResetHoweverLongTheAnswerTook(t *testing.T) {
	for _, tc := range []struct {
		name      string
		took      time.Duration
		remaining string
		reset     func(answered time.Time) (name, value string)
		want      time.Duration
	}{
		{"Anthropic's reset, a time", 3 * time.Second, "Anthropic-Ratelimit-Requests-Remaining", func(at time.Time) (string, string) {
			return "Anthropic-Ratelimit-Requests-Reset", at.Add(time.Second).Format(time.RFC3339)
		}, time.Second},
		{"Anthropic's reset after an answer longer than MaxPause", 90 * time.Second, "Anthropic-Ratelimit-Requests-Remaining", func(at time.Time) (string, string) {
			return "Anthropic-Ratelimit-Requests-Reset", at.Add(20 * time.Second).Format(time.RFC3339)
		}, 20 * time.Second},
		{"OpenAI's reset after an answer longer than MaxPause", 90 * time.Second, "X-Ratelimit-Remaining-Requests", func(time.Time) (string, string) {
			return "X-Ratelimit-Reset-Requests", "1m50s" // from when the request arrived
		}, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					clk.Advance(tc.took)
					w.Header().Set("Date", clk.Now().Format(http.TimeFormat)) // the server's clock is the fake one
					w.Header().Set(tc.remaining, "0")
					w.Header().Set(tc.reset(clk.Now()))
				}
			})

			for range 2 {
				_, err := getStatus(t, context.Background(), client, srv.URL)
				require.NoError(t, err)
			}

			assert.Equal(t, []time.Duration{tc.want}, clk.Slept())
		})
	}
}

func TestLimiterPreciseResetCountsForMoreThanCoarseRetryAfter(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("X-Ratelimit-Reset-Requests", "20ms")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})

	for range 2 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
	}

	assert.Equal(t, []time.Duration{20 * time.Millisecond}, clk.Slept())
}

func TestLimiterCapsAServerPauseAtMaxPause(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxPause time.Duration
		header   http.Header
		status   int
		want     time.Duration
	}{
		{"Retry-After a year away", 0, http.Header{"Retry-After": {"31536000"}}, 429, DefaultMaxPause},
		{"a reset a year away", 0, http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"8760h"}}, 200, DefaultMaxPause},
		{"an hour, MaxPause 5s", 5 * time.Second, http.Header{"Retry-After": {"3600"}}, 429, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{MaxPause: tc.maxPause, MaxWait: 2 * time.Minute}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					for k, v := range tc.header {
						w.Header()[k] = v
					}
					w.WriteHeader(tc.status)
				}
			})

			for range 2 {
				_, err := getStatus(t, context.Background(), client, srv.URL)
				require.NoError(t, err)
			}

			assert.Equal(t, []time.Duration{tc.want}, clk.Slept())
		})
	}
}

func TestLimiterPauseDoesNotStopOtherKeys(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{Key: func(r *http.Request, _ string) string { return r.URL.Path }}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, retryAfter429)

	_, err := getStatus(t, context.Background(), client, srv.URL+"/a")
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/b")
	require.NoError(t, err)

	assert.Empty(t, clk.Slept())
}

func TestLimiterPausesForEverySpentWindowASuccessReports(t *testing.T) {
	for _, window := range []struct{ remaining, reset string }{
		{"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
		{"X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
		{"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
		{"Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
		{"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Input-Tokens-Reset"},
		{"Anthropic-Ratelimit-Output-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Reset"},
	} {
		t.Run(window.remaining, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{}, clk)
			reset := "2s"
			if strings.HasPrefix(window.remaining, "Anthropic") {
				reset = clk.Now().Add(2 * time.Second).Format(time.RFC3339)
			}
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Date", clk.Now().Format(http.TimeFormat)) // the server's clock is the fake one
					w.Header().Set(window.remaining, "0")
					w.Header().Set(window.reset, reset)
				}
				io.WriteString(w, "ok")
			})

			for range 2 {
				_, err := getStatus(t, context.Background(), client, srv.URL)
				require.NoError(t, err)
			}

			assert.Equal(t, []time.Duration{2 * time.Second}, clk.Slept())
			assert.EqualValues(t, 1, l.Stats().ServerPauses)
		})
	}
}

func TestMayReportSpentWindowFindsTheRemainingHeadersInFewOrMany(t *testing.T) {
	others := func(n int) http.Header {
		h := http.Header{"X-Ratelimit-Limit-Requests": {"60"}}
		for i := 1; i < n; i++ {
			h.Set(fmt.Sprintf("X-Other-%d", i), "v")
		}
		return h
	}
	for _, n := range []int{1, 2, 3, 4, 5, 20} {
		assert.False(t, mayReportSpentWindow(others(n)), "%d headers, none a remaining count", n)
		for _, name := range remainingHeaders {
			h := others(n)
			h.Set(name, "0")
			assert.True(t, mayReportSpentWindow(h), "%s among %d headers", name, n)
		}
	}
}

// TestMayReportSpentWindowAgreesWithLookingUpEveryName checks the test,
// whichever way it reads a map, against asking for each of the six names,
// over every map of up to six headers drawn from the six, names of their
// lengths that are none of them, and short names.
func TestMayReportSpentWindowAgreesWithLookingUpEveryName(t *testing.T) {
	names := slices.Concat(remainingHeaders[:], []string{"X-Ratelimit-Remaining-Tokenz",
		"Anthropic-Ratelimit-Requests-Remainder", "Content-Type", "Date", "X-Ratelimit-Limit-Requests"})
	lookUp := func(h http.Header) bool {
		return slices.ContainsFunc(remainingHeaders[:], func(name string) bool { _, ok := h[name]; return ok })
	}
	for set := range 1 << len(names) {
		h := http.Header{}
		for i, name := range names {
			if set&(1<<i) != 0 {
				h[name] = []string{"0"}
			}
		}
		if len(h) > 6 {
			continue
		}
		require.Equal(t, lookUp(h), mayReportSpentWindow(h), "%v", h)
	}
}

func TestMayReportSpentWindowSkipsOnlyNamesShorterThanEveryRemainingHeader(t *testing.T) {
	for _, name := range remainingHeaders {
		assert.GreaterOrEqual(t, len(name), shortestRemaining, "%s would be skipped by its length", name)
	}
	assert.True(t, slices.ContainsFunc(remainingHeaders[:], func(name string) bool { return len(name) == shortestRemaining }))
}

func TestTimesBoundsTheProductAsDividingMaxSpanDoes(t *testing.T) {
	byDivision := func(n int64, t time.Duration) time.Duration {
		if n <= 0 || t <= 0 {
			return 0
		}
		if n > int64(maxSpan/t) {
			return maxSpan
		}
		return time.Duration(n) * t
	}
	edges := []int64{math.MinInt64, -1, 0, 1, 2, 3, 7, 28, 1000, 1e9, 1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 1<<62 - 1, 1 << 62, 1<<62 + 1, math.MaxInt64 - 1, math.MaxInt64}
	var ns []int64
	for _, t := range edges {
		ns = append(ns, t)
		if t > 0 { // around the largest n whose product fits
			q := int64(maxSpan) / t
			ns = append(ns, q-1, q, q+1)
		}
	}
	for _, n := range ns {
		for _, d := range edges {
			assert.Equal(t, byDivision(n, time.Duration(d)), times(n, time.Duration(d)), "times(%d, %d)", n, d)
		}
	}
}

func TestLimiterIgnoresServerWhenAsked(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 10, IgnoreServer: true}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, retryAfter429)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	_, err = getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 2, hits.n.Load())
	assert.Zero(t, l.Stats().ServerPauses)
	assert.Zero(t, l.Stats().SlowDowns)
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

func always429(_ int64, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusTooManyRequests)
}

func TestLimiterLowersRateByBetaOnA429(t *testing.T) {
	clk := newFakeClock(moveOn)
	var rates []float64
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, OnThrottle: func(e ThrottleEvent) {
		if e.Reason == ThrottleSlowDown {
			rates = append(rates, e.Rate)
		}
	}}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, always429)

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Equal(t, []float64{7}, rates)
	assert.InDelta(t, 7, keyRate(t, l, srv), 1e-9)
	assert.EqualValues(t, 1, l.Stats().SlowDowns)
}

func TestLimiterLowersRateOncePerRound(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 5}, clk)
	ks := limKey(t, l, "h", "m")
	tooMany := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}
	sent := clk.Now()
	clk.Advance(time.Millisecond)

	// Five requests sent together all come back 429: one round, one cut.
	for range 5 {
		l.observe(bareRequest, nil, ks, 0, tooMany, sent, noEnd)
	}
	require.InDelta(t, 70, ks.rate, 1e-9)
	// A 429 to a request sent after the cut is a new round.
	clk.Advance(time.Millisecond)
	l.observe(bareRequest, nil, ks, 0, tooMany, clk.Now(), noEnd)

	assert.InDelta(t, 49, ks.rate, 0.1, "0.7 × the 70/s (recovering a little)")
	assert.EqualValues(t, 2, l.Stats().SlowDowns)
}

func TestLimiterCutsFromTheRateTheProviderAccepted(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 1}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n > 20 {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	// 10 requests a second for two seconds, well below the 100 allowed.
	for range 21 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
		clk.Advance(100 * time.Millisecond)
	}

	// The cut is from the 10/s accepted, not from the 100/s configured
	// (which would take seven rounds of 429s to come down to 10).
	assert.InDelta(t, 7, keyRate(t, l, srv), 0.5)
}

func TestLimiterRequeuesWaitingRequestsAtTheLowerRate(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 2 {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})

	getConcurrently(t, clk, client, srv.URL, 10)

	// The second request's 429 cut the rate to 70/s: the eight still
	// waiting, queued 10ms apart, went about 1/70 s apart instead (a
	// little less as the rate recovers, to 72/s in the 0.11 s they take).
	gaps := hits.gaps(2)
	require.Len(t, gaps, 8)
	for _, gap := range gaps {
		assert.LessOrEqual(t, gap, BucketLimit{Rate: 70}.interval())
		assert.Greater(t, gap, BucketLimit{Rate: 73}.interval())
	}
}

func TestLimiterNeverLowersRateBelowMinimum(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10, Adaptive: AdaptiveConfig{DecreaseFactor: 0.1}}, clk)
	ks := limKey(t, l, "h", "m")
	tooMany := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}

	for range 5 {
		l.observe(bareRequest, nil, ks, 0, tooMany, clk.Now(), noEnd)
		clk.Advance(time.Millisecond)
	}

	assert.InDelta(t, DefaultMinRequestsPerSecond, ks.rate, 1e-9)
}

func TestLimiterRecoversRateAlongCubicCurveUpToConfigured(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 10}, clk)
	ks := limKey(t, l, "h", "m")
	l.observe(bareRequest, nil, ks, 0, &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}, clk.Now(), noEnd)
	require.InDelta(t, 7, ks.rate, 1e-9)
	k := 1.957433820584164 // ∛(10·0.3/0.4) s: back at 10 req/s after K

	rateAfter := func(d time.Duration) float64 {
		clk.Advance(d)
		var p place
		wait, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
		require.Zero(t, wait)
		return ks.rate
	}
	half := rateAfter(time.Duration(k / 2 * float64(time.Second)))
	back := rateAfter(time.Duration(k / 2 * float64(time.Second)))
	later := rateAfter(time.Hour)

	assert.InDelta(t, 10-0.4*(k/2)*(k/2)*(k/2), half, 1e-6, "half way: C·(t−K)³ + Wmax")
	assert.InDelta(t, 10, back, 1e-6)
	assert.Equal(t, 10.0, later, "never above the configured rate")
	assert.False(t, ks.adapting)
}

func TestLimiterDropsIdleKeys(t *testing.T) {
	clk := newFakeClock(moveOn)
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
	assert.Equal(t, 1, l.cfg.Store.(*MemoryLimitStore).Len(), "the store dropped them too")
}

func TestLimiterFindsTheKeyUsedLastOnlyWhileItHoldsIt(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{IdleTTL: time.Minute}, clk)
	first := limKey(t, l, "h", "m")
	require.Same(t, first, limKey(t, l, "h", "m"))

	clk.Advance(2 * time.Minute)
	limKey(t, l, "h", "other") // sweeps the idle key
	require.Equal(t, 1, l.Stats().Keys)
	l.last.Store(first) // as a request that found it just before the sweep leaves it

	again := limKey(t, l, "h", "m")
	assert.NotSame(t, first, again, "the swept state is not used again")
	assert.Same(t, again, limKey(t, l, "h", "m"))
	assert.Equal(t, 2, l.Stats().Keys, "one state per key")
}

func TestLimiterKeepsAKeyWhilePausedAndDropsItAfter(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{IdleTTL: time.Minute, MaxPause: 5 * time.Minute, Key: func(r *http.Request, _ string) string { return r.URL.Path }}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "180")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	_, err := getStatus(t, context.Background(), client, srv.URL+"/paused")
	require.NoError(t, err)

	clk.Advance(2 * time.Minute)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/other")
	require.NoError(t, err)
	assert.Equal(t, 2, l.Stats().Keys, "dropping the paused key would forget the pause")

	clk.Advance(2 * time.Minute)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/other")
	require.NoError(t, err)
	assert.Equal(t, 1, l.Stats().Keys, "the pause is over: nothing left to keep")
}

func TestLimiterKeepsALoweredRateUntilItRecovers(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1, IdleTTL: time.Second,
		Key: func(r *http.Request, _ string) string { return r.URL.Path }}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	_, err := getStatus(t, context.Background(), client, srv.URL+"/slow")
	require.NoError(t, err)

	clk.Advance(2 * time.Second) // idle, but still recovering: K = ∛(1000·0.3/0.4) ≈ 9.1 s
	_, err = getStatus(t, context.Background(), client, srv.URL+"/other")
	require.NoError(t, err)
	assert.Equal(t, 2, l.Stats().Keys)

	clk.Advance(20 * time.Second)
	_, err = getStatus(t, context.Background(), client, srv.URL+"/other")
	require.NoError(t, err)
	assert.Equal(t, 1, l.Stats().Keys, "the rate recovered: nothing left to keep")
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
		{"token limit too small for the output estimate", LimitConfig{TokensPerMinute: 5000, OutputEstimate: 8000}, "too small"},
		{"output estimate near the int limit", LimitConfig{TokensPerMinute: 5000, OutputEstimate: math.MaxInt64}, "too small"},
		{"negative idle TTL", LimitConfig{IdleTTL: -time.Second}, "IdleTTL"},
		{"negative output estimate", LimitConfig{OutputEstimate: -1}, "OutputEstimate"},
		{"negative body limit", LimitConfig{MaxBufferedBody: -1}, "MaxBufferedBody"},
		{"negative max pause", LimitConfig{MaxPause: -1}, "MaxPause"},
		{"beta of one", LimitConfig{Adaptive: AdaptiveConfig{DecreaseFactor: 1}}, "Adaptive.DecreaseFactor"},
		{"negative beta", LimitConfig{Adaptive: AdaptiveConfig{DecreaseFactor: -0.5}}, "Adaptive.DecreaseFactor"},
		{"NaN recovery", LimitConfig{Adaptive: AdaptiveConfig{RecoveryScale: math.NaN()}}, "Adaptive.RecoveryScale"},
		{"negative minimum rate", LimitConfig{Adaptive: AdaptiveConfig{MinRequestsPerSecond: -1}}, "Adaptive.MinRequestsPerSecond"},
		// Lowered to RequestsPerSecond with the defaults, +Inf was taken.
		{"infinite minimum rate", LimitConfig{RequestsPerSecond: 5, Burst: 1, Adaptive: AdaptiveConfig{MinRequestsPerSecond: math.Inf(1)}}, "Adaptive.MinRequestsPerSecond must be a finite number >= 0, got +Inf"},
		{"NaN beta", LimitConfig{Adaptive: AdaptiveConfig{DecreaseFactor: math.NaN()}}, "Adaptive.DecreaseFactor"},
		{"infinite recovery", LimitConfig{Adaptive: AdaptiveConfig{RecoveryScale: math.Inf(1)}}, "Adaptive.RecoveryScale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLimiter(tc.c)
			assert.Nil(t, l)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "httpguard: limiter: "), err.Error())
			assert.Equal(t, 1, strings.Count(err.Error(), "httpguard:"))
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNewLimiterAcceptsZeroConfig(t *testing.T) {
	l, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	assert.Equal(t, DefaultMaxWait, l.cfg.MaxWait)
	assert.Equal(t, DefaultMaxPause, l.cfg.MaxPause)
	assert.IsType(t, &MemoryLimitStore{}, l.cfg.Store)
}

func TestLimiterReportsWaitsToOnThrottleAndStats(t *testing.T) {
	clk := newFakeClock(moveOn)
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

	key := keyName(srv, "")
	assert.Equal(t, []ThrottleEvent{
		{Key: key, Reason: ThrottleRequests, Wait: 500 * time.Millisecond},
		{Key: key, Reason: ThrottleRequests, Wait: 500 * time.Millisecond},
	}, events)
	st := l.Stats()
	assert.EqualValues(t, 3, st.Requests)
	assert.EqualValues(t, 2, st.Throttled)
	assert.Equal(t, time.Second, st.Waited)
	assert.Equal(t, 1, st.Keys)
}

// downLimitStore is a LimitStore whose every call fails.
type downLimitStore struct{}

var errStoreDown = errors.New("store down")

func (downLimitStore) Take(context.Context, string, BucketLimit, BucketLimit, int64) (time.Duration, ThrottleReason, error) {
	return 0, "", errStoreDown
}
func (downLimitStore) Pause(context.Context, string, time.Duration) error       { return errStoreDown }
func (downLimitStore) Adjust(context.Context, string, BucketLimit, int64) error { return errStoreDown }

func TestLimiterRefusesWhenTheStoreFails(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: downLimitStore{}}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	_, err := getStatus(t, context.Background(), client, srv.URL)

	assert.ErrorIs(t, err, errStoreDown)
	assert.True(t, IsRefusal(err))
	assert.Zero(t, hits.n.Load())
	assert.EqualValues(t, 1, l.Stats().StoreErrors)
}

func TestLimiterOwnStoreIsOnTheLimitersClock(t *testing.T) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 10, Burst: 1})
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	for range 3 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
	}

	assert.Equal(t, []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}, clk.Slept())
	times := hits.Times()
	assert.Equal(t, 200*time.Millisecond, times[2].Sub(times[0]))
}

func TestMemoryLimitStoreLetsALateTurnKeepItsPlace(t *testing.T) {
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	reqs := BucketLimit{Rate: 10, Burst: 1}
	take := func() time.Duration {
		wait, _, err := s.Take(context.Background(), "k", reqs, BucketLimit{}, 0)
		require.NoError(t, err)
		return wait
	}
	require.Zero(t, take())

	clk.Advance(130 * time.Millisecond) // the turn was at 100ms: 30ms late
	require.Zero(t, take())
	clk.Advance(70 * time.Millisecond)
	assert.Zero(t, take(), "the next turn is at 200ms, not 230ms")

	clk.Advance(time.Second) // idle: no turns saved up
	require.Zero(t, take())
	assert.Equal(t, 100*time.Millisecond, take())
}

func TestMemoryLimitStoreDropsRunOutKeysAsCallsCome(t *testing.T) {
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	for i := range 100 {
		_, _, err := s.Take(context.Background(), fmt.Sprint(i), BucketLimit{Rate: 10, Burst: 1}, BucketLimit{}, 0)
		require.NoError(t, err)
	}
	require.Len(t, s.keys, 100)

	clk.Advance(2 * time.Second)
	_, _, err := s.Take(context.Background(), "new", BucketLimit{Rate: 10, Burst: 1}, BucketLimit{}, 0)
	require.NoError(t, err)

	assert.Len(t, s.keys, 1)
}

func TestMemoryLimitStoreKeyIsNewOnAClockSetBackBeforeItsFirstReading(t *testing.T) {
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	reqs := BucketLimit{Rate: 10, Burst: 1}
	_, _, err := s.Take(context.Background(), "first", reqs, BucketLimit{}, 0)
	require.NoError(t, err)
	clk.advanceTo(clk.Now().Add(-time.Hour))

	wait, _, err := s.Take(context.Background(), "k", reqs, BucketLimit{Rate: 1, Burst: 10}, 10)
	require.NoError(t, err)
	assert.Zero(t, wait, "full buckets, no pause")
	wait, by, err := s.Take(context.Background(), "k", reqs, BucketLimit{}, 0)
	require.NoError(t, err)
	assert.Equal(t, ThrottleRequests, by)
	assert.Equal(t, 100*time.Millisecond, wait)
}

func TestMemoryLimitStoreTimesCenturiesAwayDoNotWrapAround(t *testing.T) {
	ctx := context.Background()
	s := newMemoryLimitStore(newFakeClock(block).Now)
	require.NoError(t, s.Pause(ctx, "paused", math.MaxInt64))
	wait, by, err := s.Take(ctx, "paused", BucketLimit{}, BucketLimit{}, 0)
	require.NoError(t, err)
	assert.Equal(t, ThrottlePaused, by)
	assert.Greater(t, wait, 100*365*24*time.Hour)

	glacial := BucketLimit{Rate: 1e-12, Burst: math.MaxInt64}
	for range 3 {
		require.NoError(t, s.Adjust(ctx, "debt", glacial, math.MaxInt64))
	}
	wait, by, err = s.Take(ctx, "debt", BucketLimit{}, glacial, 1)
	require.NoError(t, err)
	assert.Equal(t, ThrottleTokens, by)
	assert.Greater(t, wait, 100*365*24*time.Hour)
}

func TestMemoryLimitStoreHintToASweptStateIsNotUsed(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	toks := BucketLimit{Rate: 10, Burst: 100}
	var hint stateHint
	none, tb := BucketLimit{}.bucket(), toks.bucket()
	wait, _, _, err := s.takeAt(clk.Now(), "k", &hint, &none, &tb, 10)
	require.NoError(t, err)
	require.Zero(t, wait)
	require.NotNil(t, hint.Load())

	clk.Advance(2 * time.Second) // k's bucket is full again: the next sweep drops it
	_, _, err = s.Take(ctx, "other", BucketLimit{}, toks, 1)
	require.NoError(t, err)
	s.adjust("k", &hint, &tb, 100, noEnd, noEnd) // the usage of k's request comes in late

	_, by, err := s.Take(ctx, "k", BucketLimit{}, toks, 1)
	require.NoError(t, err)
	assert.Equal(t, ThrottleTokens, by, "the debit reached the key's state, not the swept one")
}

// A turn asked with a reading of the clock taken before its key was
// dropped (by a sweep, or by the Limiter letting go of the state its key
// offered) arrives after the drop: the key's new state counts it from the
// drop on, so the instant after admits Burst turns in all, not Burst plus
// the late one.
func TestMemoryLimitStoreTurnReadBeforeItsKeyWasDroppedCountsFromTheDrop(t *testing.T) {
	reqs := BucketLimit{Rate: 10, Burst: 4}
	for name, drop := range map[string]func(*MemoryLimitStore, *stateHint, *gcraState){
		"sweep": func(s *MemoryLimitStore, _ *stateHint, _ *gcraState) {
			_, _, err := s.Take(context.Background(), "other", reqs, BucketLimit{}, 0)
			require.NoError(t, err)
		},
		"unpin": func(s *MemoryLimitStore, hint *stateHint, own *gcraState) { s.unpin("k", hint, own) },
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(block)
			s := newMemoryLimitStore(clk.Now)
			rb, none := reqs.bucket(), BucketLimit{}.bucket()
			// The state k's hint offers is pinned, out of the sweep's way,
			// for the Limiter to drop (unpin).
			var hint stateHint
			own := new(gcraState)
			if name == "unpin" {
				hint.own = own
			}
			take := func(at time.Time) bool {
				wait, _, _, err := s.takeAt(at, "k", &hint, &rb, &none, 0)
				require.NoError(t, err)
				return wait == 0
			}
			for range 4 {
				require.True(t, take(clk.Now()))
			}
			clk.Advance(500 * time.Millisecond)
			late := clk.Now() // k's bucket is refilling: this turn would be admitted now

			clk.Advance(2 * time.Second) // k's bucket is full again: it may be dropped
			drop(s, &hint, own)
			require.Nil(t, s.lookup("k"), "k was dropped")

			admitted := 0
			if take(late) {
				admitted++
			}
			for take(clk.Now()) {
				admitted++
			}
			assert.Equal(t, reqs.Burst, int64(admitted), "turns admitted from the drop on, the late one included")
		})
	}
}

func TestMemoryLimitStoreRefusesMoreTokensThanABurst(t *testing.T) {
	_, _, err := NewMemoryLimitStore().Take(context.Background(), "k", BucketLimit{}, BucketLimit{Rate: 1, Burst: 10}, 11)

	assert.ErrorContains(t, err, "11 tokens asked of a bucket of 10")
}

// FuzzLimiterReplaysAnyBody sends arbitrary bodies, with and without
// GetBody, through the Limiter's body inspection: the body sent must be the
// caller's, byte for byte, and a body is counted only when it is a JSON
// object. The one body refused is a JSON object that servers would read
// differently (errAmbiguousRequest), which is sent nowhere.
func FuzzLimiterReplaysAnyBody(f *testing.F) {
	f.Add([]byte(`{"model":"m","max_tokens":5,"messages":[]}`), uint16(0), false)
	f.Add([]byte("   \n{\"model\":\"m\"}"), uint16(3), true)
	f.Add([]byte("model=m"), uint16(2), false)
	f.Add([]byte(strings.Repeat(" ", 600)+"{}"), uint16(100), false)
	f.Add([]byte{}, uint16(0), true)
	f.Add([]byte("  "), uint16(0), true)             // spaces past the limit: not known to be JSON
	f.Add([]byte(`{"model":[]}`), uint16(85), false) // ambiguous: refused
	f.Fuzz(func(t *testing.T, body []byte, limit uint16, getBody bool) {
		l, err := NewLimiter(LimitConfig{TokensPerMinute: 60_000, MaxBufferedBody: int64(limit) + 1})
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, "http://h/", bytes.NewReader(body))
		require.NoError(t, err)
		if !getBody {
			req.GetBody = nil
			req.Body = io.NopCloser(req.Body)
		}

		send, _, model, toks, err := l.inspect(req)
		if errors.Is(err, errAmbiguousRequest) {
			i := firstNonSpace(body)
			require.True(t, i >= 0 && body[i] == '{', "only a JSON object is refused as ambiguous")
			return
		}
		require.NoError(t, err)
		var got []byte
		if send.Body != nil {
			got, err = io.ReadAll(send.Body)
			require.NoError(t, err)
		}

		assert.Equal(t, string(body), string(got))
		if i := firstNonSpace(body); i < 0 || body[i] != '{' {
			assert.Zero(t, toks)
			assert.Empty(t, model)
		}
	})
}

// closeTracker is a request body that records whether it was closed.
type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeTracker) Close() error { c.closed.Store(true); return nil }

func TestLimiterClosesRequestBodyWhenRejected(t *testing.T) {
	clk := newFakeClock(block)
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

func TestLimiterRefusesARequestWithoutURL(t *testing.T) {
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 10, Burst: 1})
	require.NoError(t, err)
	body := &closeTracker{Reader: strings.NewReader("{}")}
	req := &http.Request{Method: http.MethodPost, Header: http.Header{}, Body: body}

	resp, err := l.Wrap(limRoundTripperFunc(func(*http.Request) (*http.Response, error) {
		t.Fatal("the request was sent")
		return nil, nil
	})).RoundTrip(req)

	assert.Nil(t, resp)
	assert.ErrorContains(t, err, "httpguard: limiter: request has no URL")
	assert.True(t, IsRefusal(err))
	assert.True(t, body.closed.Load())
}

func TestLimiterReportsATransportReturningNothing(t *testing.T) {
	l, err := NewLimiter(LimitConfig{})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, "http://api.example/v1/models", nil)
	require.NoError(t, err)

	resp, err := l.Wrap(limRoundTripperFunc(func(*http.Request) (*http.Response, error) { return nil, nil })).RoundTrip(req)

	assert.Nil(t, resp)
	assert.ErrorContains(t, err, "neither a response nor an error")
	assert.False(t, IsRefusal(err), "the request may have been sent")
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

// limPost sends body as JSON through client and returns the response, body
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

// available returns the tokens key's bucket holds now, by the memory store
// the Limiter uses.
func available(t *testing.T, l *Limiter, key string) float64 {
	t.Helper()
	s := l.cfg.Store.(*MemoryLimitStore)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.lookup(key)
	require.NotNil(t, st, "key %q", key)
	missing := float64(max(st.toks.Load()-s.clock(), 0)) / float64(l.toks.interval())
	return float64(l.toks.Burst) - missing
}

func TestLimiterTakesPromptAndMaxOutputFromTokenBucket(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil) // answers carry no usage

	limPostRead(t, client, srv.URL, limChatBody("m", 2000, 500))

	assert.InDelta(t, 60_000-2000-500, available(t, l, keyName(srv, "m")), 2)
}

func TestLimiterAssumesTheOutputEstimateWhenRequestSetsNoMaximum(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000, OutputEstimate: 3000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	limPostRead(t, client, srv.URL, limChatBody("m", 0, 500))

	assert.InDelta(t, 60_000-3000-500, available(t, l, keyName(srv, "m")), 2)
}

func TestLimiterRefundsOverestimateOnceUsageIsRead(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(100, 50))
	key := keyName(srv, "m")

	resp := limPost(t, client, srv.URL, limChatBody("m", 4000, 500))
	before := available(t, l, key)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	assert.InDelta(t, 60_000-4000-500, before, 2, "the estimate is held until the usage is known")
	assert.InDelta(t, 60_000-150, available(t, l, key), 1e-6)
}

func TestLimiterTakesUnderestimateOnceUsageIsRead(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(1000, 9000))

	limPostRead(t, client, srv.URL, limChatBody("m", 100, 500))

	assert.InDelta(t, 60_000-10_000, available(t, l, keyName(srv, "m")), 1e-6)
}

func TestLimiterKeepsEstimateWhenAnswerHasNoUsage(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[]}`)
	})

	limPostRead(t, client, srv.URL, limChatBody("m", 4000, 500))

	assert.InDelta(t, 60_000-4500, available(t, l, keyName(srv, "m")), 2)
}

func TestLimiterLetsNextRequestUseRefundedTokens(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(10, 10))

	limPostRead(t, client, srv.URL, limChatBody("m", 5000, 100))
	limPostRead(t, client, srv.URL, limChatBody("m", 5000, 100))

	assert.Empty(t, clk.Slept(), "without the refund the second request would wait ~50 s")
}

func TestLimiterMakesNextRequestWaitForUnderestimatedTokens(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk) // 100 tokens/s
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(100, 5900))

	limPostRead(t, client, srv.URL, limChatBody("m", 100, 100))
	limPostRead(t, client, srv.URL, limChatBody("m", 900, 100))

	// The first used the whole minute; the second needs 1000 tokens: 10 s.
	require.Len(t, clk.Slept(), 1)
	assert.InDelta(t, float64(10*time.Second), float64(clk.Slept()[0]), float64(100*time.Millisecond))
}

func TestLimiterBoundsTheDebtOfAnAbsurdUsageReport(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 6000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(1_000_000_000, 1_000_000_000))

	limPostRead(t, client, srv.URL, limChatBody("m", 100, 100))

	assert.InDelta(t, -6000, available(t, l, keyName(srv, "m")), 1e-6, "one minute of debt at most")
}

func TestLimiterKeysTokensByModel(t *testing.T) {
	clk := newFakeClock(moveOn)
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
	assert.ErrorContains(t, err, "tokens bucket")
	assert.Empty(t, clk.Slept())
	assert.EqualValues(t, 1, hits.n.Load())
}

func TestLimiterCountsTokensOfAJSONBodyWhateverItsContentType(t *testing.T) {
	for _, tc := range []struct {
		name, contentType string
		getBody           bool
	}{{"text/plain", "text/plain", true}, {"none", "", true}, {"none, without GetBody", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, nil)
			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("\n  "+limChatBody("m", 2000, 500)))
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.contentType)
			if !tc.getBody {
				req.GetBody = nil
			}

			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()

			assert.InDelta(t, 60_000-2000-500, available(t, l, keyName(srv, "m")), 2)
		})
	}
}

func TestLimiterDoesNotCountTokensOfABodyThatIsNotJSON(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)

	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`model=m&max_tokens=5000`))
	require.NoError(t, err)
	resp.Body.Close()

	assert.Equal(t, 1, l.Stats().Keys)
	assert.Zero(t, l.cfg.Store.(*MemoryLimitStore).Len(), "no tokens taken, nothing stored")
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestLimiterSendsALargeBodyThatIsNotJSONWithoutBufferingIt(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	var got int64
	srv, _, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		got, _ = io.Copy(io.Discard, r.Body)
	})
	const size = 1 << 20
	body := &countingReader{r: io.LimitReader(neverEnding('x'), size)}
	req, err := http.NewRequest(http.MethodPost, srv.URL, body)
	require.NoError(t, err)
	req.ContentLength = size
	var readBeforeSending int64
	base := srv.Client().Transport
	rt := l.Wrap(limRoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		readBeforeSending = body.n.Load()
		return base.RoundTrip(r)
	}))

	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()

	assert.LessOrEqual(t, readBeforeSending, int64(sniffLen), "only a prefix was read to tell it is not JSON")
	assert.EqualValues(t, size, got, "the server got the whole body")
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

func TestLimiterSendsBodyByteForByte(t *testing.T) {
	body := "{ \"model\" : \"m\",\n\t\"messages\":[{\"role\":\"user\",\"content\":\"héllo \\u00e9 \\\"quoted\\\"\"}],\"max_tokens\":7 }  "
	for _, tc := range []struct {
		name    string
		getBody bool
	}{{"with GetBody", true}, {"without GetBody", false}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
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
	clk := newFakeClock(moveOn)
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
	assert.InDelta(t, 0, available(t, l, keyName(srv, "")), 1e-6, "too long to read: counted as a whole minute of tokens")
}

func TestLimiterLeavesCallersRequestUnchanged(t *testing.T) {
	clk := newFakeClock(moveOn)
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
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"+
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":60,\"total_tokens\":100}}\n\n"+
			"data: [DONE]\n\n")
	})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}`

	limPostRead(t, client, srv.URL, body)

	assert.InDelta(t, 60_000-100, available(t, l, keyName(srv, "m")), 1e-6)
}

// FuzzLimiterFollowsServer feeds the Limiter's server-following path
// arbitrary rate-limit headers: it must not panic, a key's wait must stay
// finite, non-negative and within MaxPause, and its rate above the floor.
func FuzzLimiterFollowsServer(f *testing.F) {
	f.Add(true, "2", "", "")
	f.Add(true, "Wed, 21 Oct 2015 07:28:00 GMT", "0", "6m0s")
	f.Add(false, "", "0", "20ms")
	f.Add(false, "", "-1", "1e309s")
	f.Add(true, "99999999999999999999", "0", "-5s")
	f.Add(true, "1", "0", "20ms")
	f.Fuzz(func(t *testing.T, tooMany bool, retryAfter, remaining, reset string) {
		clk := newFakeClock(block)
		l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 2}, clk)
		ks := limKey(t, l, "h", "m")
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody}
		if tooMany {
			resp.StatusCode = http.StatusTooManyRequests
		}
		resp.Header.Set("Retry-After", retryAfter)
		resp.Header.Set("X-Ratelimit-Remaining-Requests", remaining)
		resp.Header.Set("X-Ratelimit-Reset-Requests", reset)
		resp.Header.Set("Anthropic-Ratelimit-Tokens-Remaining", remaining)
		resp.Header.Set("Anthropic-Ratelimit-Tokens-Reset", reset)

		l.observe(bareRequest, nil, ks, 0, resp, clk.Now(), noEnd)
		var p place
		wait, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), anyWait)

		require.NoError(t, err)
		assert.GreaterOrEqual(t, wait, time.Duration(0))
		assert.LessOrEqual(t, wait, DefaultMaxPause)
		assert.GreaterOrEqual(t, ks.rate, DefaultMinRequestsPerSecond)
	})
}

func TestLimiterPacesEveryAttemptOfARetrierOutside(t *testing.T) {
	clk := newFakeClock(moveOn)
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
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}, clk.Slept(), "the retries waited their turns")
}

type limRoundTripperFunc func(*http.Request) (*http.Response, error)

func (f limRoundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLimiterRejectionIsNotRetriedByRetrier(t *testing.T) {
	clk := newFakeClock(block)
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
	clk := newFakeClock(block)
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
	assert.InDelta(t, 60_000-callers*15, available(t, l, keyName(srv, "m")), 1e-6,
		"every estimate was corrected to its usage")
}

func TestWaitingForATurnDoesNotCountAgainstTheAttemptTimeout(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, "ok") })
	// Real clock: the second request waits 400ms for its turn, far longer
	// than the AttemptTimeout, which a loaded machine's loopback round
	// trip still stays well within.
	limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 2.5, Burst: 1})
	require.NoError(t, err)
	p := DefaultRetryPolicy()
	p.AttemptTimeout = 150 * time.Millisecond
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

// bareRequest stands for the request a test's observe calls answer.
var bareRequest = httptest.NewRequest("POST", "http://api.test/v1/chat/completions", nil)

// anyWait is the wait turn allows a test that queues without a bound.
const anyWait = time.Duration(1 << 62)

// A rate faster than a token a nanosecond rounded its refill time to zero,
// which the store reads as no limit: a Limiter with TokensPerMinute above
// 6e10 stopped counting tokens. Such a bucket now refills a token a
// nanosecond and still refuses what passes its burst.
func TestMemoryLimitStoreLimitsARateFasterThanANanosecond(t *testing.T) {
	clk := &storeClock{base: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	s := newMemoryLimitStore(clk.Now)
	for _, toks := range []BucketLimit{{Rate: 1e11 / 60, Burst: 100}, {Rate: 1e12, Burst: 100}} {
		key := fmt.Sprint(toks.Rate)
		wait, _, err := s.Take(context.Background(), key, BucketLimit{}, toks, 100)
		require.NoError(t, err)
		require.Zero(t, wait, "the burst is there")
		wait, by, err := s.Take(context.Background(), key, BucketLimit{}, toks, 100)
		require.NoError(t, err)
		assert.Equal(t, ThrottleTokens, by, "rate %v: a second burst at the same instant", toks.Rate)
		assert.Equal(t, 100*time.Nanosecond, wait, "a token a nanosecond")
	}
}

// A request estimated above TokensPerMinute could never fit the bucket: it
// takes the whole burst instead, so it goes on a full bucket (the provider
// may still refuse it) and the next request waits for the bucket to refill,
// rather than waiting forever or being refused outright.
func TestLimiterSendsARequestAboveTokensPerMinuteOnAFullBucket(t *testing.T) {
	for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
		"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newLimiter(t, LimitConfig{TokensPerMinute: 6000, MaxWait: -1}, clk)
			srv, client, hits := newLimitedServer(t, l, clk, nil) // answers carry no usage

			limPostRead(t, client, srv.URL, limChatBody("m", 50_000, 500))
			assert.InDelta(t, 0, available(t, l, keyName(srv, "m")), 2, "the whole burst taken")

			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(limChatBody("m", 10, 40)))
			require.NoError(t, err)
			_, err = client.Do(req)
			assert.ErrorIs(t, err, ErrRateLimited, "the next waits for the bucket to refill")
			assert.Len(t, hits.Times(), 1)
		})
	}
}
