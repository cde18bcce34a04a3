package httpguard

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A rate SlowDown is given that is not one (NaN, infinite, below zero) is
// refused and recorded nowhere: recorded, it was the key's decrease for
// the round, which every Limiter then refused to adopt as a corrupted
// rate, so the round's real 429s cut nothing.
func TestMemoryLimitStoreSlowDownRefusesARateThatIsNotOne(t *testing.T) {
	ctx := context.Background()
	for _, rate := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -5} {
		s := NewMemoryLimitStore()
		_, _, err := s.SlowDown(ctx, "k", time.Millisecond, rate, 0)
		require.Error(t, err, "%v", rate)
		assert.Contains(t, err.Error(), "rate must be a finite number >= 0")

		ar, err := s.AdaptiveRate(ctx, "k")
		require.NoError(t, err)
		assert.Zero(t, ar.Decreases, "%v: nothing recorded", rate)
		ar, _, err = s.SlowDown(ctx, "k", time.Millisecond, 10, 0)
		require.NoError(t, err)
		assert.Equal(t, AdaptiveRate{Decreases: 1, From: 10}, ar, "%v: the next 429 cuts", rate)
	}
}
