package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A store back on Redis that waits for the others to come back takes
// every request from its local share too; the credit of a turn taken
// then gives back to both. The credit of a turn Redis took before the
// outage, which the share never took, refilled the share whole all the
// same: a store whose share was drained got it back from a request sent
// before Redis went away, and sent that much more than its share while
// the others still sent on theirs.
func TestLimitStoreRejoiningDoesNotRefillTheShareWithATurnRedisTookBefore(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "rejoin-credit", ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	b := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "rejoin-credit"})
	ctx := context.Background()
	require.NoError(t, b.countIn(ctx))
	require.NoError(t, a.countIn(ctx))
	require.Equal(t, 0.5, a.share())
	toks := httpguard.BucketLimit{Rate: 0.001, Burst: 100} // the share: a burst of 50, no refill to speak of

	wait, _, before, err := a.TakeTurn(ctx, "k", noLimit, toks, 80) // on Redis, before the outage
	require.NoError(t, err)
	require.Zero(t, wait)
	require.NotEqual(t, httpguard.NoTurnEnd, before)

	srv.kill()
	take(t, a, "warm", noLimit, noLimit, 0)
	require.True(t, events.next(t).Down)
	srv.restart()
	require.False(t, events.next(t).Down, "back on Redis, b not back yet: a rejoins")
	require.True(t, a.rejoin.on.Load())

	var last int64               // the end of the last turn passed
	passed := func() (n int64) { // what a passes at once, 5 tokens a turn
		for {
			wait, _, end, err := a.TakeTurn(ctx, "k", noLimit, toks, 5)
			require.NoError(t, err)
			if wait > 0 {
				return n
			}
			n, last = n+5, end
		}
	}
	require.EqualValues(t, 20, passed(), "what Redis has left (the share has 50)")
	// Redis is refilled by the turn before the outage, which used nothing.
	require.NoError(t, a.CreditTurn(ctx, "k", toks, before, 80))
	// The share has 25 left: 20 passed, and 5 Redis refused, which stay
	// taken from the share.
	assert.EqualValues(t, 25, passed(), "the share's 25 left, not refilled by a turn it never took")
	// A turn taken while rejoining, which the share took too, is credited
	// to both.
	require.NoError(t, a.CreditTurn(ctx, "k", toks, last, 5))
	assert.EqualValues(t, 5, passed(), "the share refilled by a turn it took")
}
