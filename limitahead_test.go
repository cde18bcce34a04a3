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

// pauseAheadRig is a Limiter (10/s, burst 1) on a scriptedAheadStore of
// 20 ms round trips, on a fake clock, whose first request is answered,
// once answer is closed, with a 429 and Retry-After: 10.
type pauseAheadRig struct {
	clk    *fakeClock
	store  *scriptedAheadStore
	client *http.Client
	url    string
	hits   *arrivals
	answer chan struct{}
	done   atomic.Int64 // requests ended
}

// newPauseAheadRig returns the rig once its first request, taken at once,
// reached the server, where it waits for answer.
func newPauseAheadRig(t *testing.T) *pauseAheadRig {
	r := &pauseAheadRig{clk: newFakeClock(block), answer: make(chan struct{})}
	r.store = &scriptedAheadStore{MemoryLimitStore: newMemoryLimitStore(r.clk.Now), clk: r.clk, rtt: 20 * time.Millisecond}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Minute, Store: r.store}, r.clk)
	srv, client, hits := newLimitedServer(t, l, r.clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-r.answer
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	r.client, r.url, r.hits = client, srv.URL, hits
	r.send(t)
	require.Eventually(t, func() bool { return len(hits.Times()) == 1 }, 5*time.Second, time.Millisecond)
	return r
}

// send sends a request on a goroutine of its own.
func (r *pauseAheadRig) send(t *testing.T) {
	go func() {
		defer r.done.Add(1)
		_, err := getStatus(t, context.Background(), r.client, r.url)
		assert.NoError(t, err)
	}()
}

// Was a bug: a request holding a turn an AheadLimitStore took ahead of its
// time went at that time though a 429 paused the key meanwhile: it slept
// unwoken by the pause, which moved only the places in the queue. It now
// waits for the pause's end, as a queued request does, taking a turn again
// then (the one taken ahead goes to nobody: the store admits a little
// less, never more).
func TestLimiterRequestHoldingATurnTakenAheadWaitsForAPause(t *testing.T) {
	r := newPauseAheadRig(t)
	r.store.mu.Lock()
	r.store.answers = []aheadAnswer{{15 * time.Millisecond, ""}} // taken 15 ms ahead
	r.store.mu.Unlock()
	r.send(t) // holds its turn when the first one's 429 comes
	require.Eventually(t, func() bool { return r.clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	pausedAt := r.clk.Now()
	close(r.answer)
	require.Eventually(t, func() bool { return r.done.Load() == 1 }, 5*time.Second, time.Millisecond)

	r.clk.Drive(t, 2, &r.done)

	times := r.hits.Times()
	require.Len(t, times, 2)
	assert.GreaterOrEqual(t, times[1].Sub(pausedAt), 10*time.Second, "sent during the pause")
}

// Was a bug, as above, for a pause heard while the ask that took the turn
// ahead was out.
func TestLimiterTurnTakenAheadOfAPauseHeardDuringTheAskWaitsForIt(t *testing.T) {
	r := newPauseAheadRig(t)
	var pausedAt time.Time
	r.store.mu.Lock()
	r.store.answers = []aheadAnswer{{15 * time.Millisecond, ""}} // taken 15 ms ahead
	r.store.during = func() {
		pausedAt = r.clk.Now()
		close(r.answer)
		require.Eventually(t, func() bool { return r.done.Load() == 1 }, 5*time.Second, time.Millisecond)
	}
	r.store.mu.Unlock()
	r.send(t) // its ask is out when the first one's 429 comes

	r.clk.Drive(t, 2, &r.done)

	times := r.hits.Times()
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
