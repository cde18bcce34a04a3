package redisguard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two Redis outages back to back, two processes failing open on a fifth of
// a Limit of 100 each. Reservations taken on Redis before the first outage
// are settled during the second (a refund: 40 reserved, 10 charged) and
// after it; a local reservation of the first outage is settled during the
// second; a charge of the first outage is replayed between the two. Redis
// ends with exactly what was charged, holds nothing, and admits the rest
// of the Limit and no more: no credit lost or counted twice.
func TestBudgetCreditAcrossTwoOutages(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	ea, eb := make(failovers, 10), make(failovers, 10)
	cfg := func(e failovers) BudgetStoreConfig {
		return BudgetStoreConfig{Name: "two-outages", FailOpenShare: 0.2, ProbeInterval: 10 * time.Millisecond, OnFailover: e.record}
	}
	a := newStore(t, srv.client(t), cfg(ea))
	b := newStore(t, srv.client(t), cfg(eb))
	ctx := context.Background()
	const limit = 100
	settle := func(s *BudgetStore, id uint64, actual httpguard.Money) {
		t.Helper()
		s.Settle(ctx, "lifetime", id, actual) // kept while Redis is away: the error says so
	}
	down := func() {
		t.Helper()
		srv.kill()
		a.Renew(ctx, "lifetime", []uint64{1}, time.Minute)
		b.Renew(ctx, "lifetime", []uint64{2}, time.Minute)
		require.True(t, ea.next(t).Down)
		require.True(t, eb.next(t).Down)
	}
	up := func() (replayedA, replayedB httpguard.Money) {
		t.Helper()
		srv.restart()
		e, f := ea.next(t), eb.next(t)
		require.False(t, e.Down)
		require.False(t, f.Down)
		return e.Replayed, f.Replayed
	}

	require.True(t, reserve(t, a, lifetime(1, 40), limit).OK)
	require.True(t, reserve(t, b, lifetime(2, 30), limit).OK)

	down() // the first outage
	require.True(t, reserve(t, a, lifetime(11, 15), limit).OK, "a's share")
	require.True(t, reserve(t, b, lifetime(12, 20), limit).OK, "b's share")
	settle(a, 11, 12)
	ra, rb := up()
	assert.Equal(t, httpguard.Money(12), ra)
	assert.Zero(t, rb)
	assert.Equal(t, [2]httpguard.Money{12, 70}, totals(t, a, "lifetime"), "what a's share spent, and the holds of 1 and 2 again")

	down()            // the second
	settle(a, 1, 10)  // taken before the first outage: 30 back
	settle(b, 12, 20) // b's share's, of the first outage
	assert.True(t, reserve(t, a, lifetime(13, 8), limit).OK, "a's share spent 12 of its 20 in this window")
	assert.False(t, reserve(t, a, lifetime(14, 1), limit).OK, "12 spent and 8 held of 20")
	ra, rb = up()
	assert.Equal(t, httpguard.Money(10), ra)
	assert.Equal(t, httpguard.Money(20), rb)

	settle(b, 2, 30) // taken before the first outage
	settle(a, 13, 8) // a's share's, of the second
	assert.Equal(t, [2]httpguard.Money{80, 0}, totals(t, b, "lifetime"), "12+10+20+30+8 charged, nothing held")
	assert.False(t, reserve(t, b, lifetime(21, 21), limit).OK, "80 of 100 charged")
	assert.True(t, reserve(t, b, lifetime(22, 20), limit).OK)
}

// lateHook delays the client's calls of one script by d after their
// context ends, as a command already on its way reaches a slow Redis late:
// the call still runs, whatever its caller does meanwhile.
type lateHook struct {
	sha   string
	d     time.Duration
	armed *atomic.Bool
	ran   chan struct{} // receives when a delayed call has run
}

func (h lateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h lateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); h.armed.Load() && len(args) > 1 && args[1] == h.sha {
			<-ctx.Done()
			time.Sleep(h.d)
			err := next(context.WithoutCancel(ctx), cmd)
			h.ran <- struct{}{}
			return err
		}
		return next(ctx, cmd)
	}
}

func (h lateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A caller cancels a reservation whose script reaches Redis late (a slow
// Redis, a command already on its way): the store releases the
// reservation, since Redis may have made it, but sent the release at once,
// on another connection, where it ran first and released nothing; the
// reservation then ran and held its money for the rest of its lease, for
// an attempt never sent. The release now waits for the reservation's call
// to end (a Timeout at most).
func TestTheReleaseOfACancelledReservationDoesNotOvertakeIt(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := redis.NewClient(testClientOptions(srv.Addr))
	t.Cleanup(func() { client.Close() })
	var armed atomic.Bool
	ran := make(chan struct{}, 1)
	client.AddHook(lateHook{sha: reserveScript.Hash(), d: 50 * time.Millisecond, armed: &armed, ran: ran})
	s := newStore(t, client, BudgetStoreConfig{Timeout: time.Second, ProbeInterval: time.Hour})
	require.True(t, reserve(t, s, lifetime(1, 10), 100).OK) // the scripts are loaded
	_, err := s.Settle(context.Background(), "lifetime", 1, 10)
	require.NoError(t, err)

	armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err = s.Reserve(ctx, lifetime(2, 40), 100)
	require.ErrorIs(t, err, context.Canceled)
	<-ran
	s.releasing.Wait()
	armed.Store(false)
	assert.Equal(t, [2]httpguard.Money{10, 0}, totals(t, s, "lifetime"), "the cancelled reservation holds nothing")
	assert.True(t, reserve(t, s, lifetime(3, 90), 100).OK, "90 of 100 are free")
}
