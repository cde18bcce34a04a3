package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A debit whose call gets no answer within Timeout is kept and taken from
// Redis once it is back (keptDebit). When Redis was only stalled, the
// call ran too, once Redis went on: the replay took the same tokens a
// second time (here 100 estimated, 100 and 500 billed more: 700 of 1000,
// and Redis held 1200, refusing the 300 left). A debit now carries a token
// that Redis remembers, as a credit does, and counts once. The client
// has go-redis's default options: it waits for the answer past Timeout,
// on a connection that stays open, and Redis runs the call once it goes on
// (one that follows the context's deadline closes the connection, and the
// call goes with it).
func TestLimitStoreDebitThatWasOnlySlowIsTakenOnce(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { client.Close() })
	s := newLimitStore(t, client, LimitStoreConfig{FailClosed: true, Timeout: 100 * time.Millisecond,
		ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1.0 / 60, Burst: 1000}
	wait, _ := take(t, s, "k", noLimit, toks, 100)
	require.Zero(t, wait)
	require.NoError(t, s.Adjust(ctx, "k", toks, 100)) // loads the script and leaves an idle connection

	stalled := blockRedis(t, srv.Addr, 400*time.Millisecond)
	err := s.Adjust(ctx, "k", toks, 500)
	require.ErrorIs(t, err, ErrUnavailable, "no answer within Timeout: the debit is kept")
	require.True(t, events.next(t).Down)
	require.NoError(t, <-stalled)
	require.False(t, events.next(t).Down)

	wait, _ = take(t, s, "k", noLimit, toks, 301)
	assert.NotZero(t, wait, "700 of 1000 taken: 300 left")
	wait, _ = take(t, s, "k", noLimit, toks, 300)
	assert.Zero(t, wait, "700 of 1000 taken: 300 left")
}
