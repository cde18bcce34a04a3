package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A store that loses Redis again while it rejoins the fleet is back on its
// local share alone; a credit then gives that share the tokens back once.
// It gave them back twice (once as the share of a store rejoining, once as
// the share of a store failed over), and the share admitted more than its
// part of the limit.
func TestLimitStoreFailingAgainWhileRejoiningCreditsItsShareOnce(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "again", ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	b := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "again"})
	ctx := context.Background()
	require.NoError(t, b.countIn(ctx))
	require.NoError(t, a.countIn(ctx))
	require.Equal(t, 0.5, a.share())

	srv.kill()
	take(t, a, "warm", noLimit, noLimit, 0)
	require.True(t, events.next(t).Down)
	srv.restart()
	require.False(t, events.next(t).Down, "back on Redis, b not back yet: a rejoins")
	srv.kill()
	take(t, a, "warm", noLimit, noLimit, 0)
	require.True(t, events.next(t).Down, "lost again while rejoining")

	toks := httpguard.BucketLimit{Rate: 0.001, Burst: 100}
	wait, _ := take(t, a, "k", noLimit, toks, 50) // the share's whole burst
	require.Zero(t, wait)
	require.NoError(t, a.Adjust(ctx, "k", toks, -20)) // the answer used 30 of its 50
	_, by := take(t, a, "k", noLimit, toks, 21)
	assert.Equal(t, httpguard.ThrottleTokens, by, "20 tokens given back to the share, not 40")
	srv.restart() // for the stores to count themselves out when closed
}
