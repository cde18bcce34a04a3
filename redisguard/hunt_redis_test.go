package redisguard

// Tests of the Redis adversarial hunt of 2026-12-03 (branch hunt-redis).
// Each failed on main before its fix.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// One replica's clock is a year ahead (a host whose RTC or NTP went wrong).
// The fleet was idle across the last boundary, so the newest window Redis
// knows has ended, and the replica is the first to reserve: it opened the
// window a year ahead for the whole fleet. Every replica on time then
// followed the newest window there (an older window's reservations move to
// the newest), and the fleet spent one Limit in a year: after it, every
// request was refused until the year had passed, even once the replica was
// fixed or gone (the newest window never expires). A window may still open
// a little early after an idle boundary (see
// TestAReplicaWhoseClockIsAheadAfterAnIdleWindowStaysWithinTheLimit), not a
// window that starts further ahead of Redis's clock than its own length.
func TestAReplicaAYearAheadDoesNotMoveTheFleetIntoItsWindow(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	onTime := newStore(t, srv.client(t), BudgetStoreConfig{})
	ahead := newStore(t, srv.client(t), BudgetStoreConfig{Name: onTime.cfg.Name})
	ahead.now = func() time.Time { return time.Now().AddDate(1, 0, 0) }
	ctx := context.Background()
	const limit = 100
	day := func(id uint64, start time.Time) httpguard.Reservation {
		start = start.Truncate(24 * time.Hour)
		return httpguard.Reservation{ID: id, Window: "day:" + start.Format("2006-01-02"), Start: start, End: start.Add(24 * time.Hour),
			Amount: limit, Lease: time.Minute}
	}
	now := time.Now()
	require.True(t, reserve(t, onTime, day(1, now.AddDate(0, 0, -1)), limit).OK) // yesterday's traffic; today's has not begun
	_, err := onTime.Settle(ctx, day(1, now.AddDate(0, 0, -1)).Window, 1, limit)
	require.NoError(t, err)

	_, err = ahead.Reserve(ctx, day(2, now.AddDate(1, 0, 0)), limit)
	assert.True(t, errors.Is(err, ErrUnavailable), "a window a year ahead of Redis's clock: %v", err)

	today := day(3, now)
	res := reserve(t, onTime, today, limit)
	assert.True(t, res.OK && res.Window == today.Window, "today's reservation goes to today's window, not the year-ahead one: %+v", res)

	// The replica ahead now follows the window the fleet is in.
	res, err = ahead.Reserve(ctx, day(4, now.AddDate(1, 0, 0)), 2*limit)
	require.NoError(t, err)
	assert.True(t, res.OK && res.Window == today.Window, "%+v", res)
}
