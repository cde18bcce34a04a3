package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A turn Redis took tells its end, and so the store knows its credit is
// none of the local share's: when the answer's usage comes in while Redis
// is away, the share, which never took those tokens, is not refilled with
// them. Before, it was (Adjust's credit, which cannot tell whose turn it
// was): a process whose share was drained got another burst of it back
// from a request sent before Redis went away, and sent twice its share at
// one instant.
func TestLimitStoreCreditOfATurnRedisTookDoesNotRefillTheShare(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: time.Hour})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 0.001, Burst: 100} // the share: a burst of 25, no refill to speak of

	wait, _, end, err := s.TakeTurn(ctx, "k", noLimit, toks, 80) // on Redis
	require.NoError(t, err)
	require.Zero(t, wait)
	require.NotEqual(t, httpguard.NoTurnEnd, end, "Redis took the turn")
	srv.kill()

	passed := func() (n int64) { // what the share passes at once, 5 tokens a turn
		for {
			wait, _, end, err := s.TakeTurn(ctx, "k", noLimit, toks, 5)
			require.NoError(t, err)
			if wait > 0 {
				return n
			}
			assert.Equal(t, httpguard.NoTurnEnd, end, "the share took the turn")
			n += 5
		}
	}
	require.EqualValues(t, 25, passed(), "the share's burst")
	require.NoError(t, s.CreditTurn(ctx, "k", toks, end, 80)) // the turn on Redis used nothing
	assert.Zero(t, passed(), "the share, drained, refilled by a turn it never took")
	srv.restart() // for the store to count itself out when closed
}

// A server whose clock reads before 2017 (redis_rate's epoch, and the
// scripts') keeps its buckets at times below zero, as redis_rate does. The
// end of a turn there is below zero too: it is an end all the same, not
// an unexpected reply, which counted Redis as down at every take of
// tokens and left the fleet on its local shares.
func TestLimitStoreTakesTokensOnAServerWhoseClockIsBefore2017(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2016, 6, 1, 0, 0, 0, 0, time.UTC))
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { client.Close() })
	a := newLimitStore(t, client, LimitStoreConfig{Name: "before 2017", ProbeInterval: time.Hour})
	b := newLimitStore(t, client, LimitStoreConfig{Name: "before 2017", ProbeInterval: time.Hour})
	ctx := context.Background()

	wait, _, end, err := a.TakeTurn(ctx, "k", noLimit, perSecond, 100)
	require.NoError(t, err)
	require.Zero(t, wait)
	assert.NotEqual(t, httpguard.NoTurnEnd, end, "Redis took the turn")
	wait, by := take(t, b, "k", noLimit, perSecond, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "another process sees the 100 taken on Redis")
	assert.InDelta(t, 1, wait.Seconds(), 0.1)
	require.NoError(t, a.CreditTurn(ctx, "k", perSecond, end, 50))
	wait, _ = take(t, b, "k", noLimit, perSecond, 50)
	assert.Zero(t, wait, "the credit reached Redis")
}
