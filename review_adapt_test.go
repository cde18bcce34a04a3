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

func (s badRateStore) SlowDown(context.Context, string, time.Duration, float64) (AdaptiveRate, error) {
	return AdaptiveRate{Decreases: 1, From: s.from}, nil
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
