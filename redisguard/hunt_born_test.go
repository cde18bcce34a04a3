package redisguard

// Tests of the review of 2026-12-04 of how a BudgetStore notices a Redis
// that lost a window's data (born, noticed, cause).

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Redis back from a snapshot taken before the current window opened
// names the window before as the newest, under the same born. When a
// process that never reserved in the current window (one restarted, or
// idle since the window before) reserves first, it opens the window again,
// empty, and the newest key names it once more: a store that spent there
// before must still notice, as it does for a Redis restarted empty.
func TestABudgetStoreNoticesAnOlderSnapshotAfterAnotherReopenedTheWindow(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	s := newStore(t, client, BudgetStoreConfig{})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	in := func(window string, from time.Time) func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return func(id uint64, amount httpguard.Money) httpguard.Reservation {
			return httpguard.Reservation{ID: id, Window: window, Start: from, End: from.Add(time.Hour), Amount: amount, Lease: time.Minute}
		}
	}
	before, r := in("w1", start.Add(-time.Hour)), in("w2", start)
	const limit = 100
	require.True(t, reserve(t, s, before(1, 10), limit).OK)
	_, err := s.Settle(ctx, "w1", 1, 10)
	require.NoError(t, err)
	require.NoError(t, client.Save(ctx).Err()) // the snapshot
	require.True(t, reserve(t, s, r(2, 60), limit).OK)
	_, err = s.Settle(ctx, "w2", 2, 60)
	require.NoError(t, err)

	srv.kill()
	srv.restart() // from the snapshot
	require.Equal(t, "w1", client.HGet(ctx, s.keys.newest(), "key").Val(), "the snapshot names the window before")

	fresh := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name})
	assert.True(t, reserve(t, fresh, r(10, 10), limit).OK, "nothing tells this one")
	requireWindowLost(t, s, r, 60+10, 3, 5, 5, limit, "")
	_, err = fresh.Reserve(ctx, r(11, 1), limit)
	assert.ErrorIs(t, err, ErrUnavailable, "and the fleet is told")
}

// The error of a lost window is all a process without a Logger hears: it
// must name the remedy along with the cause, for each cause.
func TestTheErrorOfALostWindowNamesTheRemedy(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: 10, Lease: time.Minute}
	}
	evicted := newStore(t, client, BudgetStoreConfig{})
	require.True(t, reserve(t, evicted, r(1), 100).OK)
	require.NoError(t, client.Del(ctx, evicted.keys.window("w"), evicted.keys.leases("w")).Err())
	_, err := evicted.Reserve(ctx, r(2), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorContains(t, err, "maxmemory-policy noeviction", "evicted: the remedy")

	emptied := newStore(t, client, BudgetStoreConfig{})
	require.True(t, reserve(t, emptied, r(1), 100).OK)
	srv.kill()
	srv.restart()
	_, err = emptied.Reserve(ctx, r(2), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorContains(t, err, "appendonly yes", "emptied: the remedy")
	assert.NotContains(t, err.Error(), srv.Addr, "nothing of the client")
}
