package redisguard

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A rate SlowDown is given that is not one (NaN, infinite, below zero) is
// refused before Redis: written to the key's hash, it was the fleet's
// decrease for the round, which every Limiter then refused to adopt as a
// corrupted rate, so the round's real 429s cut nothing.
func TestLimitStoreSlowDownRefusesARateThatIsNotOne(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	s := newLimitStore(t, client, LimitStoreConfig{})
	ctx := context.Background()
	for _, rate := range []float64{math.NaN(), math.Inf(1), -5} {
		_, _, err := s.SlowDown(ctx, "k", time.Millisecond, rate, 0)
		require.Error(t, err, "%v", rate)
		assert.Contains(t, err.Error(), "redisguard: limit store: SlowDown: rate must be a finite number >= 0")
		n, err := client.Exists(ctx, s.keys.of("k").adapt).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "%v: nothing written to Redis", rate)
	}
	ar, _, err := s.SlowDown(ctx, "k", time.Millisecond, 10, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar.Decreases, "the next 429 cuts")
	assert.InDelta(t, 10, ar.From, 1e-9)
}
