package httpguard

import (
	"context"
	"strings"
	"sync"
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
