package httpguard

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// badRateStore is an AdaptiveLimitStore whose adaptive rate is what a
// corrupted shared key reads as (a Redis hash's "from" set to "nan" is NaN
// to Lua's tonumber and to strconv.ParseFloat).
type badRateStore struct {
	*MemoryLimitStore
	from float64
}

func (s badRateStore) AdaptiveRate(context.Context, string) (AdaptiveRate, error) {
	return AdaptiveRate{Decreases: 1, From: s.from, Since: time.Millisecond}, nil
}

func (s badRateStore) SlowDown(context.Context, string, time.Duration, float64, float64) (AdaptiveRate, bool, error) {
	return AdaptiveRate{Decreases: 1, From: s.from}, true, nil
}

// A store's adaptive rate that is not a rate (NaN, or below zero) must not
// lift the key's request limit: a rate of NaN is a bucket of no interval,
// which admits every request, and the Limiter would pass it to the store,
// whose next decrease would be from NaN again.
func TestLimiterIgnoresAnAdaptiveRateThatIsNotARate(t *testing.T) {
	for _, from := range []float64{math.NaN(), math.Inf(1), -50} {
		clk := newFakeClock(block)
		store := badRateStore{newMemoryLimitStore(clk.Now), from}
		l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: store}, clk)
		ks := limKey(t, l, "h", "m")
		admitted := 0
		for range 20 { // all at one instant
			var p place
			wait, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), 0)
			require.NoError(t, err)
			if wait == 0 {
				admitted++
			}
		}
		assert.Equal(t, 1, admitted, "from %v: a burst of 1 admits one request at once", from)
		assert.False(t, math.IsNaN(ks.rate) || ks.rate <= 0, "from %v: rate %v", from, ks.rate)
		assert.NotZero(t, l.Stats().StoreErrors, "from %v: counted as the store's error", from)
	}
}

// scriptedRateStore is an AdaptiveLimitStore whose adaptive rate the test
// sets: the decrease it holds, and when it was, on the test's clock.
type scriptedRateStore struct {
	*MemoryLimitStore
	clk  *fakeClock
	n    uint64
	from float64
	at   time.Time
}

func (s *scriptedRateStore) AdaptiveRate(context.Context, string) (AdaptiveRate, error) {
	return AdaptiveRate{Decreases: s.n, From: s.from, Since: s.clk.Now().Sub(s.at)}, nil
}

// A store that lost a key while the fleet was still recovering (a Redis
// restarted empty, or a key expired) counts its decreases from 1 again. A
// Limiter that saw the old first decrease and is still recovering from it
// must adopt the new one: its rate otherwise stays on the old, higher
// curve while the other replicas cut, and its next 429 cuts the fleet a
// second time for the same round.
func TestLimiterAdoptsANewFirstDecreaseWhileStillRecovering(t *testing.T) {
	clk := newFakeClock(block)
	store := &scriptedRateStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 5, Store: store}, clk)
	ks := limKey(t, l, "h", "m")
	takeTurn := func() {
		t.Helper()
		var p place
		_, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
		ks.leave(&p)
	}
	store.n, store.from, store.at = 1, 100, clk.Now()
	takeTurn()
	require.InDelta(t, 70, ks.rate, 0.1, "adopted the first decrease")

	clk.Advance(2 * time.Second) // still recovering: K is 4.2s
	store.n, store.from, store.at = 1, 20, clk.Now()
	takeTurn()
	assert.InDelta(t, 14, ks.rate, 0.1, "adopted the store's new first decrease")
}
