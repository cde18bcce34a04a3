package redisguard

// What the BudgetStore keeps right across Redis's failures and slowness.
// Each test was written by an adversarial review and failed before its fix.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitGoneOrKept waits until key expires (it was given a TTL of about
// ttl), or until it is clear that it does not: 3·ttl.
func waitGoneOrKept(t *testing.T, c redis.UniversalClient, key string, ttl time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(3 * ttl); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		n, err := c.Exists(context.Background(), key).Result()
		require.NoError(t, err)
		if n == 0 {
			return
		}
	}
}

// A window's spend lasts as long as the window. A settlement may reach a
// window before any reservation there (the interface allows it: "an
// unknown id only adds actual"). It used to give the window's hash an
// expiry of now + Retention, not knowing the window's end, and the
// reservations that followed never corrected it: the window's settled money
// vanished mid-window and the fleet got its whole Limit again. Now every
// reservation sets the window's lifetime, and a settlement passes the end
// its store noted.
func TestASettlementBeforeTheFirstReservationLeavesTheWindowItsLifetime(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newStore(t, client, BudgetStoreConfig{Retention: 100 * time.Millisecond})
	ctx := context.Background()
	_, err := s.Settle(ctx, "lifetime", 7, 60)
	require.NoError(t, err)
	require.True(t, reserve(t, s, lifetime(1, 30), 100).OK)
	ttl, err := client.PTTL(ctx, s.keys.window("lifetime")).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the window that never ends is never dropped")

	waitGoneOrKept(t, client, s.keys.window("lifetime"), 100*time.Millisecond)
	assert.False(t, reserve(t, s, lifetime(2, 100), 100).OK,
		"60 were spent in the lifetime window: $100 more must not fit (the spend was forgotten)")
}

// The same, as a fleet meets it: a store failing open spends from its local
// share in a new day while Redis is away (the outage spans the window's
// start). When Redis is back, the replay of that spend is the new day's
// first write, and gives the day's keys a TTL of Retention; the day's
// reservations on Redis never correct it, and the day forgets its spend
// long before it ends.
func TestAFailOpenReplayIntoANewWindowLastsAsLongAsTheWindow(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	client := srv.client(t)
	events := make(failovers, 10)
	s := newStore(t, client, BudgetStoreConfig{FailOpenShare: 0.5, Retention: 200 * time.Millisecond,
		ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	dayStart := time.Now().Truncate(time.Hour)
	yesterday := httpguard.Reservation{Window: "d1", Start: dayStart.Add(-24 * time.Hour), End: dayStart, Lease: time.Minute}
	today := httpguard.Reservation{Window: "d2", Start: dayStart, End: dayStart.Add(24 * time.Hour), Lease: time.Minute}
	const limit = 100

	r := yesterday
	r.ID, r.Amount = 1, 10
	require.True(t, reserve(t, s, r, limit).OK)
	_, err := s.Settle(ctx, "d1", 1, 10)
	require.NoError(t, err)

	srv.kill()
	r = today
	r.ID, r.Amount = 2, 50
	local := reserve(t, s, r, limit)
	require.True(t, local.OK, "from the local share")
	require.True(t, events.next(t).Down)
	_, err = s.Settle(ctx, local.Window, 2, 50)
	require.NoError(t, err)

	srv.restart()
	up := events.next(t)
	require.False(t, up.Down)
	require.Equal(t, httpguard.Money(50), up.Replayed)

	r = today
	r.ID, r.Amount = 3, 40
	require.True(t, reserve(t, s, r, limit).OK, "50 spent, 40 more fit")
	_, err = s.Settle(ctx, "d2", 3, 40)
	require.NoError(t, err)
	require.Equal(t, [2]httpguard.Money{90, 0}, totals(t, s, "d2"))
	ttl, err := client.PTTL(ctx, s.keys.window("d2")).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Until(dayStart.Add(24*time.Hour)), "d2's keys live until it ends, and Retention more")

	waitGoneOrKept(t, client, s.keys.window("d2"), 200*time.Millisecond)
	r = today
	r.ID, r.Amount = 4, 100
	assert.False(t, reserve(t, s, r, limit).OK, "90 of 100 were spent today: 100 more must not fit")
}

// blockRedis stalls the server for d, during which it serves nobody (as a
// server stalled by a slow script, a fork or a swap would), and returns
// once the stall has begun. done receives when it ends. The stall is a
// CLIENT PAUSE of every command: its OK says the pause has begun, where a
// Lua loop's start could only be guessed from a probe's ping timing out,
// which on a loaded machine a slow ping also does.
func blockRedis(t *testing.T, addr string, d time.Duration) (done chan error) {
	t.Helper()
	client := redis.NewClient(testClientOptions(addr))
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	require.NoError(t, client.Ping(ctx).Err()) // a connection ready to ask for the pause, another for the ping after it
	require.NoError(t, client.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err())
	done = make(chan error, 1)
	go func() { done <- client.Ping(ctx).Err() }() // answered once the pause ends
	return done
}

// A settlement counts once (exact accounting). A settlement whose answer
// does not come back within Timeout is kept and replayed when Redis is
// back; when Redis was only slow, the first try ran too, and the replay
// used to add the same charge a second time (as go-redis's own retry of an
// EVALSHA whose reply it lost would). Each settlement now carries a token
// that Redis remembers for a while, and counts once.
func TestASettlementThatWasOnlySlowIsChargedOnce(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{Timeout: 100 * time.Millisecond,
		ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	require.True(t, reserve(t, s, lifetime(1, 50), 100).OK)
	_, err := s.Settle(ctx, "warm-up", 0, 0) // loads settleScript and leaves an idle connection
	require.NoError(t, err)

	stalled := blockRedis(t, srv.Addr, 400*time.Millisecond)
	_, err = s.Settle(ctx, "lifetime", 1, 30)
	require.ErrorIs(t, err, ErrUnavailable, "no answer within Timeout: the charge is kept")
	require.True(t, events.next(t).Down)
	require.NoError(t, <-stalled)
	up := events.next(t)
	require.False(t, up.Down)
	// On a loaded machine a reading may itself outlast the 100ms Timeout
	// just after the stall; read again until Redis answers.
	var settled, held httpguard.Money
	for deadline := time.Now().Add(5 * time.Second); ; {
		settled, held, err = s.Totals(ctx, "lifetime")
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, err)
	assert.Equal(t, [2]httpguard.Money{30, 0}, [2]httpguard.Money{settled, held}, "one attempt, one charge of 30")
}

// Close ends within a Timeout ("every call ends within the store's Timeout"). Close
// replays the charges it kept one after the other, each bounded by Timeout
// but all of them together by nothing, and goes on after the first has
// failed: with a Redis that hangs (a partition, a stalled server), closing
// a store that kept the charges of n attempts in flight blocks n·Timeout,
// which at shutdown with hundreds of streams is minutes past any grace
// period. The probe (recover) stops at the first failure; Close does not.
func TestCloseWithAHangingRedisEndsWithinATimeout(t *testing.T) {
	client := redis.NewClient(testClientOptions(hangingRedis(t)))
	t.Cleanup(func() { client.Close() })
	const timeout = 10 * time.Millisecond
	s, err := NewBudgetStore(client, BudgetStoreConfig{Name: "closing", Timeout: timeout, ProbeInterval: time.Hour})
	require.NoError(t, err)
	ctx := context.Background()
	for id := range uint64(30) { // the charges of 30 attempts in flight when Redis went away
		_, err := s.Settle(ctx, "lifetime", id, 1)
		require.ErrorIs(t, err, ErrUnavailable)
	}
	start := time.Now()
	err = s.Close()
	elapsed := time.Since(start)
	assert.ErrorContains(t, err, "charges Redis did not record")
	assert.Less(t, elapsed, 15*timeout, "Close with a Redis that hangs")
}
