package redisguard

// Tests of the fix of the late batch's second (branch hunt-batchdate).
// Each failed on main before its fix, but the last, which pins the fix's
// first second.

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countEvery sets how old the requests s admitted for a key are when its
// next Take counts them in Redis: tests that time a batch hold it with an
// hour, so that a burst slower than admitCountEvery (under -race, on a busy
// machine) is still one batch, and count it at the next Take with 0.
func countEvery(s *LimitStore, d time.Duration) {
	s.mu.Lock()
	s.countEvery = d
	s.mu.Unlock()
}

// admitBurst has s admit n requests of key at once.
func admitBurst(t *testing.T, s *LimitStore, key string, n int) {
	t.Helper()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 1000}
	for range n {
		wait, _ := take(t, s, key, lots, noLimit, 0)
		require.Zero(t, wait)
	}
}

// ageBatch makes the requests s admitted for key and has not counted in
// Redis yet as if admitted d earlier: the time the key then stayed idle,
// without the test sleeping it.
func ageBatch(t *testing.T, s *LimitStore, key string, d time.Duration) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.admitted[key]
	require.True(t, ok, "a batch to age")
	a.since = a.since.Add(-d)
	s.admitted[key] = a
}

// first429Beyond returns the count of the first of a run of 429s to key
// that SlowDown judges beyond a tolerated share of 10%, up to 30.
func first429Beyond(t *testing.T, s *LimitStore, key string) int {
	t.Helper()
	for i := 1; i <= 30; i++ {
		_, beyond, err := s.SlowDown(context.Background(), key, time.Millisecond, 100, 0.1)
		require.NoError(t, err)
		if beyond {
			return i
		}
	}
	return 31
}

// A store counts the requests it admits in Redis a moment late, in a batch
// sent with the key's next Take or SlowDown. A burst followed by an idle
// key was counted in the second of the batch's arrival, whatever its age:
// 100 requests admitted 2.5s before the key's next 429 still made ten 429s
// a share within 10%, where the in-memory store had long forgotten them
// (it counts over the last second, the one before weighed by what of it is
// still within it). A batch now counts in the second it was admitted in,
// and not at all once that second is older than those Redis keeps.
func TestLimitStoreCountsALateBatchInTheSecondItWasAdmitted(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	for _, c := range []struct {
		name     string
		age      time.Duration
		min, max int // the first 429 beyond 10%
	}{
		{"fresh", 0, 11, 11}, // 100 requests
		{"the second before", 1400 * time.Millisecond, 4, 8}, // 100 weighed by about 0.6
		{"older", 2500 * time.Millisecond, 1, 1},             // none
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newLimitStore(t, client, LimitStoreConfig{})
			countEvery(s, time.Hour)
			admitBurst(t, s, "k", 100)
			ageBatch(t, s, "k", c.age)
			first := first429Beyond(t, s, "k")
			assert.GreaterOrEqual(t, first, c.min, "the first 429 beyond 10%")
			assert.LessOrEqual(t, first, c.max, "the first 429 beyond 10%")
		})
	}
}

// A late batch whose second is older than those Redis keeps is dropped
// also when the key's count already runs: it was added to the current
// second, so that 100 requests admitted 2.5s earlier doubled the requests
// 10% of which were tolerated.
func TestLimitStoreDropsALateBatchOlderThanTheKeysCount(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newLimitStore(t, client, LimitStoreConfig{})
	countEvery(s, time.Hour)
	admitBurst(t, s, "k", 100)
	countEvery(s, 0)
	admitBurst(t, s, "k", 1) // counts the 100 now, the batch of this one later
	countEvery(s, time.Hour)
	n, err := client.Exists(context.Background(), s.keys.of("k").adapt).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the key's count runs")
	admitBurst(t, s, "k", 100)
	ageBatch(t, s, "k", 2500*time.Millisecond)
	first := first429Beyond(t, s, "k")
	assert.Equal(t, 11, first, "beyond 10% of the 100 counted, not of the 201 admitted")
}

// A batch a failed call did not count is put back with the time its
// requests were admitted: it was put back as admitted at the failure, so
// that a burst counted after an outage, or after a call its caller gave
// up, counted in the second it came back in.
func TestLimitStorePutsBackALateBatchWithItsSecond(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newLimitStore(t, client, LimitStoreConfig{})
	countEvery(s, time.Hour)
	admitBurst(t, s, "k", 100)
	ageBatch(t, s, "k", 2500*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, s.link.isDown(), "the caller, not Redis, ended the call")
	assert.Equal(t, 1, first429Beyond(t, s, "k"), "the 100 requests of 2.5s ago do not count")
}

// A store's batch may come after a later one of another store's, which
// started the key's count: in the key's first second, the batch starts the
// windows, as the MemoryLimitStore's start at the first request admitted.
// Counted in the window before the first, as a batch older than the key's
// windows is, 50 requests admitted 50ms before the other store's first
// would count as about 22 once that window is 0.55s old. The ages leave
// the test 0.4s to reach the SlowDown within the key's first second, on a
// busy machine. (Main counted every batch
// in the current window: this one pins the fix's first second.)
func TestLimitStoreCountsAnEarlierBatchThatComesLateInTheKeysFirstSecond(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	early := newLimitStore(t, client, LimitStoreConfig{})
	late := newLimitStore(t, client, LimitStoreConfig{Name: early.cfg.Name})
	countEvery(early, time.Hour)
	countEvery(late, time.Hour)
	admitBurst(t, early, "k", 50)
	ageBatch(t, early, "k", 600*time.Millisecond)
	admitBurst(t, late, "k", 50)
	ageBatch(t, late, "k", 550*time.Millisecond)
	countEvery(late, 0)
	admitBurst(t, late, "k", 1) // counts late's 50 now, starting the key's count
	assert.Equal(t, 11, first429Beyond(t, early, "k"), "beyond 10% of the 100 requests admitted within the second")
}
