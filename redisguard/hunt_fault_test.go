package redisguard

// Tests of the Redis-fault hunt of 2026-12-04 (fleet mode). Each failed on
// main before its fix.

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The documented way to accept a lost window ("delete the field lost of
// the newest key") must reopen the window for the fleet.
func TestAcceptingALostWindowReopensIt(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newStore(t, client, BudgetStoreConfig{})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: amount, Lease: time.Minute}
	}
	require.True(t, reserve(t, s, r(1, 60), 100).OK)
	_, err := s.Settle(ctx, "w", 1, 60)
	require.NoError(t, err)
	require.NoError(t, client.Del(ctx, s.keys.window("w"), s.keys.leases("w")).Err()) // evicted
	_, err = s.Reserve(ctx, r(2, 10), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	require.NoError(t, client.HDel(ctx, s.keys.newest(), "lost").Err())
	res, err := s.Reserve(ctx, r(3, 10), 100)
	require.NoError(t, err, "the loss was accepted as the error says")
	assert.True(t, res.OK)
}
