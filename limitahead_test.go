package httpguard

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// aheadAnswer is an answer of a scriptedAheadStore's TakeTurnAhead.
type aheadAnswer struct {
	wait time.Duration
	by   ThrottleReason
}

// scriptedAheadStore is an AheadLimitStore across a network of round
// trip rtt, on a fake clock in moveOn mode, whose TakeTurnAhead gives the
// answers it is scripted with, in order, then takes every turn at once.
// Its other methods are a memory store's.
type scriptedAheadStore struct {
	*MemoryLimitStore
	clk *fakeClock

	mu      sync.Mutex
	rtt     time.Duration
	answers []aheadAnswer
	asked   []time.Duration // the ahead of each ask
	// during, when set, runs while an ask is out, after the store took
	// the turn.
	during func()
}

func (s *scriptedAheadStore) TakeTurnAhead(_ context.Context, _ string, _, _ BucketLimit, _ int64, ahead time.Duration) (time.Duration, ThrottleReason, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clk.Advance(s.rtt)
	s.asked = append(s.asked, ahead)
	if len(s.answers) == 0 {
		return 0, "", NoTurnEnd, nil
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	if s.during != nil {
		s.during()
	}
	return a.wait, a.by, NoTurnEnd, nil
}

func (s *scriptedAheadStore) Asked() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.asked...)
}

// Was a bug: a queued request that an AheadLimitStore refused with a wait
// shorter than the round trip, asked again that much ahead of its time,
// was sent at once without a turn, and its place was left in the queue
// for good. A store refuses a turn due within ahead when it does not take
// it ahead: a pause, or redisguard's local share, which takes turns only
// at their time while Redis does not answer, and refuses by a few
// milliseconds after a call that waited a Timeout for Redis.
func TestLimiterSendsNoRequestAnAheadStoreRefusedWithinItsRoundTrip(t *testing.T) {
	clk := newFakeClock(moveOn)
	store := &scriptedAheadStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk, rtt: 20 * time.Millisecond,
		answers: []aheadAnswer{
			{30 * time.Millisecond, ThrottleRequests}, // the request queues
			{5 * time.Millisecond, ThrottleRequests},  // at its place, refused within the round trip
		}}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Minute, Store: store}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	start := clk.Now()

	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	assert.Len(t, store.Asked(), 3, "asked again after the refusal, and taken then")
	require.Len(t, hits.Times(), 1)
	assert.Equal(t, 95*time.Millisecond, hits.Times()[0].Sub(start), "sent after the third ask, not the second")
	ks := limKey(t, l, strings.TrimPrefix(srv.URL, "http://"), "")
	ks.mu.Lock()
	defer ks.mu.Unlock()
	assert.Zero(t, ks.waiting, "no place left in the queue")
}

// Was a bug: a request holding a turn an AheadLimitStore took ahead of its
// time went at that time though a 429 paused the key meanwhile: it slept
// unwoken by the pause, which moved only the places in the queue. It now
// waits for the pause's end, as a queued request does, taking a turn again
// then (the one taken ahead goes to nobody: the store admits a little
// less, never more).
func TestLimiterRequestHoldingATurnTakenAheadWaitsForAPause(t *testing.T) {
	clk := newFakeClock(block)
	store := &scriptedAheadStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk, rtt: 20 * time.Millisecond}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Minute, Store: store}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	var done atomic.Int64
	go func() { // taken at once; its 429 comes while the next holds its turn
		defer done.Add(1)
		_, err := getStatus(t, context.Background(), client, srv.URL)
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool { return len(hits.Times()) == 1 }, 5*time.Second, time.Millisecond)
	store.mu.Lock()
	store.answers = []aheadAnswer{{15 * time.Millisecond, ""}} // taken 15 ms ahead
	store.mu.Unlock()
	go func() {
		defer done.Add(1)
		_, err := getStatus(t, context.Background(), client, srv.URL)
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	pausedAt := clk.Now()
	close(answer)
	require.Eventually(t, func() bool { return done.Load() == 1 }, 5*time.Second, time.Millisecond)

	clk.Drive(t, 2, &done)

	times := hits.Times()
	require.Len(t, times, 2)
	assert.GreaterOrEqual(t, times[1].Sub(pausedAt), 10*time.Second, "sent during the pause")
}

// Was a bug, as above, for a pause heard while the ask that took the turn
// ahead was out.
func TestLimiterTurnTakenAheadOfAPauseHeardDuringTheAskWaitsForIt(t *testing.T) {
	clk := newFakeClock(block)
	store := &scriptedAheadStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk, rtt: 20 * time.Millisecond}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Minute, Store: store}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	var done atomic.Int64
	go func() { // taken at once; its 429 comes while the next one's ask is out
		defer done.Add(1)
		_, err := getStatus(t, context.Background(), client, srv.URL)
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool { return len(hits.Times()) == 1 }, 5*time.Second, time.Millisecond)
	var pausedAt time.Time
	store.mu.Lock()
	store.answers = []aheadAnswer{{15 * time.Millisecond, ""}} // taken 15 ms ahead
	store.during = func() {
		pausedAt = clk.Now()
		close(answer)
		require.Eventually(t, func() bool { return done.Load() == 1 }, 5*time.Second, time.Millisecond)
	}
	store.mu.Unlock()
	go func() {
		defer done.Add(1)
		_, err := getStatus(t, context.Background(), client, srv.URL)
		assert.NoError(t, err)
	}()

	clk.Drive(t, 2, &done)

	times := hits.Times()
	require.Len(t, times, 2)
	assert.GreaterOrEqual(t, times[1].Sub(pausedAt), 10*time.Second, "sent during the pause")
}

// One slow answer of an AheadLimitStore (a call that waited out a
// failover's Timeout) does not make the asks after it take turns as far
// ahead: the Limiter asks as far ahead as the lesser of the last round
// trip and their smoothed mean. It asked 500 ms ahead after a 500 ms
// answer among 10 ms ones, taking turns a canceled request would waste.
func TestLimiterAsksAheadByTheSmoothedRoundTripAfterOneSlowAnswer(t *testing.T) {
	clk := newFakeClock(moveOn)
	store := &scriptedAheadStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk, rtt: 10 * time.Millisecond}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1, MaxWait: time.Minute, Store: store}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	send := func(rtt time.Duration) {
		t.Helper()
		store.mu.Lock()
		store.rtt = rtt
		store.mu.Unlock()
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
	}
	for range 8 {
		send(10 * time.Millisecond)
	}
	send(500 * time.Millisecond)
	send(10 * time.Millisecond)
	send(10 * time.Millisecond)

	asked := store.Asked()
	require.Len(t, asked, 11)
	assert.Equal(t, 10*time.Millisecond, asked[8], "ahead by the round trip measured")
	assert.Less(t, asked[9], 100*time.Millisecond, "after one slow answer: by the smoothed round trip, not 500ms")
	assert.Equal(t, 10*time.Millisecond, asked[10], "back at the last round trip at once")
}
