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

// A reservation runs out of Timeout on a client that does not follow its
// contexts (go-redis's default), while its script is still on its way to a
// slow Redis: the store fails over and keeps the reservation's release, as
// Redis may make it. But a probe sooner than the call's end (ProbeInterval
// below the Timeout) replayed the release at once, where it ran first and
// released nothing; the reservation then ran and held its 40 for its whole
// lease (a minute), for an attempt never sent. The store now stays failed
// over until the reservation's call has ended (a Timeout at most), as a
// cancelled reservation's release waits for it.
func TestTheReleaseOfAReservationThatRanOutOfTimeoutDoesNotOvertakeIt(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: testDialTimeout, MaxRetries: -1}) // ContextTimeoutEnabled: false
	t.Cleanup(func() { client.Close() })
	ran := make(chan struct{}, 1)
	armed := new(atomic.Bool)
	client.AddHook(scriptHook{sha: reserveScript.Hash(), armed: armed, ended: runLate(50*time.Millisecond, ran)})
	events := make(failovers, 10)
	s := newStore(t, client, BudgetStoreConfig{Timeout: 100 * time.Millisecond, ProbeInterval: 5 * time.Millisecond, OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 10), 100).OK) // the scripts are loaded
	_, err := s.Settle(context.Background(), "lifetime", 1, 10)
	require.NoError(t, err)

	armed.Store(true)
	_, err = s.Reserve(context.Background(), lifetime(2, 40), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, events.next(t).Down)
	<-ran
	armed.Store(false)
	require.False(t, events.next(t).Down)
	assert.Equal(t, [2]httpguard.Money{10, 0}, totals(t, s, "lifetime"), "the reservation that ran out of Timeout holds nothing")
	assert.True(t, reserve(t, s, lifetime(3, 90), 100).OK, "90 of 100 are free")
}

// The probe holds again a live process's reservations when Redis is back,
// and one of those calls runs out of Timeout on a client that does not
// follow its contexts while still on its way to Redis: the next probe held
// them again and went back to Redis, the attempt was settled, and then the
// late call ran and held its 40 again for a whole lease (a minute), for an
// attempt already settled. The store now stays failed over until that call
// has ended (a Timeout at most).
func TestALateHoldAgainDoesNotHoldASettledReservation(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: testDialTimeout, MaxRetries: -1}) // ContextTimeoutEnabled: false
	t.Cleanup(func() { client.Close() })
	ran := make(chan struct{}, 1)
	armed := new(atomic.Bool)
	late := runLate(50*time.Millisecond, ran)
	client.AddHook(scriptHook{sha: reholdScript.Hash(), armed: armed, ended: func(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder) error {
		armed.Store(false) // the next probe's call goes at once
		return late(ctx, next, cmd)
	}})
	events := make(failovers, 10)
	s := newStore(t, client, BudgetStoreConfig{Timeout: 100 * time.Millisecond, ProbeInterval: 5 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	require.True(t, reserve(t, s, lifetime(1, 40), 100).OK)

	srv.kill()
	require.Error(t, s.Renew(ctx, "lifetime", []uint64{1}, time.Minute))
	require.True(t, events.next(t).Down)
	armed.Store(true)
	srv.restart()
	require.False(t, events.next(t).Down)
	_, err := s.Settle(ctx, "lifetime", 1, 40)
	require.NoError(t, err)
	<-ran
	assert.Equal(t, [2]httpguard.Money{40, 0}, totals(t, s, "lifetime"), "the settled reservation holds nothing")
}
