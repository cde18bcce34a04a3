package redisguard

// Tests of the fleet-mode adversarial review of 2026-11-30 (branch
// review-fleet). Each failed on main before its fix.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A reservation that failed holds nothing ("otherwise it holds nothing";
// an error from Reserve refuses the request, which is never sent nor
// settled). When the reply of a reservation script does not come back (no
// answer within Timeout from a Redis that was only slow, or the caller's
// context ending while the script was on its way: an AttemptTimeout, a
// client giving up while it waited for room), Redis still runs the script
// and holds the money, under a lease nobody renews: with the default lease
// the fleet lost that money for a minute, with nothing in flight to bill.
func TestAReservationWhoseReplyWasLostHoldsNothing(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		srv := startRedis(t, redisOptions{})
		events := make(failovers, 10)
		s := newStore(t, srv.client(t), BudgetStoreConfig{Timeout: 100 * time.Millisecond,
			ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
		other := newStore(t, srv.client(t), BudgetStoreConfig{Name: s.cfg.Name})
		ctx := context.Background()
		require.True(t, reserve(t, s, lifetime(1, 10), 100).OK) // loads the script
		_, err := s.Settle(ctx, "lifetime", 1, 0)
		require.NoError(t, err)

		stalled := blockRedis(t, srv.Addr, 400*time.Millisecond)
		_, err = s.Reserve(ctx, lifetime(2, 60), 100)
		require.ErrorIs(t, err, ErrUnavailable, "no answer within Timeout: refused")
		require.True(t, events.next(t).Down)
		require.NoError(t, <-stalled)
		require.False(t, events.next(t).Down)

		assert.Equal(t, [2]httpguard.Money{0, 0}, totals(t, other, "lifetime"), "the refused reservation holds nothing")
		assert.True(t, reserve(t, other, lifetime(3, 60), 100).OK, "another process may use the money nothing holds")
	})
	t.Run("ContextEnded", func(t *testing.T) {
		srv := startRedis(t, redisOptions{})
		s := newStore(t, srv.client(t), BudgetStoreConfig{})
		other := newStore(t, srv.client(t), BudgetStoreConfig{Name: s.cfg.Name})
		require.True(t, reserve(t, s, lifetime(1, 10), 100).OK) // loads the script
		_, err := s.Settle(context.Background(), "lifetime", 1, 0)
		require.NoError(t, err)

		stalled := blockRedis(t, srv.Addr, 300*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err = s.Reserve(ctx, lifetime(2, 60), 100)
		cancel()
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrUnavailable, "the caller gave up; Redis is there")
		require.NoError(t, <-stalled)

		require.Eventually(t, func() bool { return totals(t, other, "lifetime") == [2]httpguard.Money{0, 0} },
			2*time.Second, 10*time.Millisecond, "the reservation whose caller gave up holds nothing: %v", totals(t, other, "lifetime"))
		assert.True(t, reserve(t, other, lifetime(3, 60), 100).OK, "another process may use the money nothing holds")
	})
}

// A caller's deadline is not an outage. A client with
// ContextTimeoutEnabled sets its connection's deadline to the context's,
// so a call that the caller's deadline cuts short (an AttemptTimeout, an
// SDK's timeout) may fail with an i/o timeout a moment before the context
// says it has ended; the store took that for Redis failing and failed over:
// a Budget then refused every request of the process with ErrUnavailable
// until the next probe (a second by default), on a Redis that was there.
func TestACallersDeadlineDoesNotFailTheStoreOver(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 0), 100).OK) // loads the script

	stalled := blockRedis(t, srv.Addr, time.Second)
	// On a loaded machine the 20 tries may outlast the stall (or a probe's
	// slow ping may have taken the stall for started early): a try Redis
	// answers proves nothing and is not counted, but enough must meet the
	// stall.
	cut := 0
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := s.Reserve(ctx, lifetime(uint64(10+i), 0), 100)
		cancel()
		if err != nil {
			cut++
		}
		require.NotErrorIs(t, err, ErrUnavailable, "try %d: the caller's deadline ended the call, not Redis", i)
	}
	require.NoError(t, <-stalled)
	require.GreaterOrEqual(t, cut, 5, "tries the stall cut short")
	select {
	case e := <-events:
		t.Fatalf("the store failed over on callers' deadlines: %+v", e)
	default:
	}
	_, err := s.Reserve(context.Background(), lifetime(2, 0), 100)
	assert.NoError(t, err)
}

// One replica whose clock runs ahead opens the next window for the whole
// fleet, before that window has started for anyone else, Redis included.
// The fleet spends the new window's Limit on top of the current one's
// within the current window: a replica 10 s ahead at the end of an hourly
// $50 window lets the provider bill $100 in that hour, and one 2 minutes
// ahead of midnight bills two daily caps on one day's invoice. With the
// in-memory store one process's clock names its windows; in a fleet the
// fastest of N clocks does, while the store already keeps the one clock
// the fleet shares (leases are on it "so that the processes sharing a
// store need not agree on the time").
func TestAReplicaWhoseClockIsAheadDoesNotOpenTheNextWindowEarly(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	onTime := newStore(t, srv.client(t), BudgetStoreConfig{})
	ahead := newStore(t, srv.client(t), BudgetStoreConfig{Name: onTime.cfg.Name})
	ctx := context.Background()
	const limit = 100
	now := time.Now() // Redis's clock too: same machine
	end := now.Add(10 * time.Second)
	current := httpguard.Reservation{ID: 1, Window: "hour:1", Start: end.Add(-time.Hour), End: end, Amount: limit, Lease: time.Minute}
	require.True(t, reserve(t, onTime, current, limit).OK)
	_, err := onTime.Settle(ctx, "hour:1", 1, limit) // the hour's cap, spent and billed
	require.NoError(t, err)

	// A replica whose clock is 10 s ahead reads it in the next hour.
	next := httpguard.Reservation{ID: 2, Window: "hour:2", Start: end, End: end.Add(time.Hour), Amount: limit, Lease: time.Minute}
	res := reserve(t, ahead, next, limit)
	require.True(t, time.Now().Before(end), "the test took 10 s")
	assert.False(t, res.OK,
		"hour:2 has not started (on the server's clock nor on the others'): the provider would bill %d in hour:1, against a Limit of %d (%+v)",
		2*limit, limit, res)
	assert.Equal(t, "hour:1", res.Window, "the reservation goes to the window the fleet is in")
}

// The same when the fleet was idle across a boundary: the newest window
// Redis knows has ended (yesterday's, whose keys may be gone) and nobody
// opened the current one yet. A replica whose clock runs ahead asks for the
// next window; the store must not count its spend in the ended window,
// where it would be forgotten as soon as a replica on time opens the
// current one, admitted a Limit again in the window the provider bills.
func TestAReplicaWhoseClockIsAheadAfterAnIdleWindowStaysWithinTheLimit(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	onTime := newStore(t, srv.client(t), BudgetStoreConfig{})
	ahead := newStore(t, srv.client(t), BudgetStoreConfig{Name: onTime.cfg.Name})
	ctx := context.Background()
	const limit = 100
	end := time.Now().Add(10 * time.Second) // the current hour's end
	window := func(id uint64, key string, start time.Time) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: key, Start: start, End: start.Add(time.Hour), Amount: limit, Lease: time.Minute}
	}
	require.True(t, reserve(t, onTime, window(1, "hour:0", end.Add(-2*time.Hour)), limit).OK) // the last traffic, an hour ago
	_, err := onTime.Settle(ctx, "hour:0", 1, 0)
	require.NoError(t, err)

	first := reserve(t, ahead, window(2, "hour:2", end), limit)                   // 10 s ahead: the next hour
	second := reserve(t, onTime, window(3, "hour:1", end.Add(-time.Hour)), limit) // on time: the current hour
	require.True(t, time.Now().Before(end), "the test took 10 s")
	assert.False(t, first.OK && second.OK, "two Limits admitted within the current hour: %+v, %+v", first, second)
}

// A window's keys expire Retention after the window ends. The end comes
// from the Budgets' calendars, Retention is counted on Redis's clock
// (PEXPIREAT of the process's end, or of Redis's now when later): when the
// Redis server's clock runs ahead of the fleet's by more than Retention,
// the keys of the window the fleet is still in expire once the fleet stops
// reserving for Retention, and the newest window (which never expires)
// still names it: the spend is forgotten, and the window admits its Limit
// again. Here the server runs 2 s ahead and Retention is 200 ms (with the
// default hour, a server more than an hour ahead, after an hour without
// traffic, is the same).
func TestAWindowIsNotForgottenBeforeItEndsWhenRedisClockRunsAhead(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	const retention = 200 * time.Millisecond
	s := newStore(t, srv.client(t), BudgetStoreConfig{Retention: retention})
	ctx := context.Background()
	const limit = 100
	fleetNow := time.Now().Add(-2 * time.Second) // the fleet's clocks, 2 s behind Redis's
	s.now = func() time.Time { return time.Now().Add(-2 * time.Second) }
	current := httpguard.Reservation{ID: 1, Window: "hour", Start: fleetNow.Add(-time.Hour + time.Second), End: fleetNow.Add(time.Second),
		Amount: limit, Lease: time.Minute}
	require.True(t, reserve(t, s, current, limit).OK)
	_, err := s.Settle(ctx, "hour", 1, limit) // the window's Limit, spent
	require.NoError(t, err)

	time.Sleep(2 * retention) // no traffic for a moment; the fleet's clocks are still in "hour"
	again := current
	again.ID = 2
	res := reserve(t, s, again, limit)
	assert.False(t, res.OK, "the window the fleet is in forgot its spend: %+v", res)
}

// A call that fails by Redis's doing (its connection closed: the server
// died, or refused) is an outage even when the caller's deadline passed
// meanwhile; only the context's error or a timeout is the caller's. Seen in
// TestFleetKeepsTheCapWhenRedisIsKilledAndRestarted under load: a Reserve
// cut by the kill, as its attempt's 250 ms ran out, returned "EOF" to the
// caller instead of failing the store over.
func TestCutShortIsTheContextsErrorOrATimeout(t *testing.T) {
	assert.True(t, cutShort(context.DeadlineExceeded))
	assert.True(t, cutShort(fmt.Errorf("x: %w", context.Canceled)))
	assert.True(t, cutShort(&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}))
	assert.False(t, cutShort(io.EOF))
	assert.False(t, cutShort(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}))
}
