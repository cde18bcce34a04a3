package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request taken on Redis at an estimate of 100 tokens is billed 900: its
// usage comes while Redis is away, and the Limiter charges the 800 more
// (Adjust). The charge went to the local share alone: once Redis was back,
// its bucket still had 900 of its 1000 tokens (a token a minute: none
// refilled meanwhile), and admitted 900 more, 1800 billed in a bucket of
// 1000. A charge made while Redis is away is now kept, as a pause is, and
// taken from Redis's bucket when it is back, before the store uses it.
func TestLimitStoreChargesRedisOnceBackForAnUnderestimateBilledWhileAway(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		srv := startRedis(t, redisOptions{persist: true})
		events := make(failovers, 10)
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailClosed: failClosed, ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
		ctx := context.Background()
		toks := httpguard.BucketLimit{Rate: 1.0 / 60, Burst: 1000}
		wait, _ := take(t, s, "k", noLimit, toks, 100)
		require.Zero(t, wait)

		srv.kill()
		err := s.Adjust(ctx, "k", toks, 800)
		if failClosed {
			require.ErrorIs(t, err, ErrUnavailable)
		} else {
			require.NoError(t, err, "charged to the local share meanwhile")
		}
		require.True(t, events.next(t).Down)
		srv.restart()
		require.False(t, events.next(t).Down)

		wait, _ = take(t, s, "k", noLimit, toks, 101)
		assert.NotZero(t, wait, "fail closed %v: 100 estimated and 800 more billed of 1000: 100 left", failClosed)
		wait, _ = take(t, s, "k", noLimit, toks, 100)
		assert.Zero(t, wait, "fail closed %v", failClosed)
	}
}
