package redisguard

// Tests of the review of 2026-12-04 of how a BudgetStore notices a Redis
// that lost a window's data (born, noticed, cause).

import (
	"context"
	"github.com/redis/go-redis/v9"
	"net"
	"sync"
	"sync/atomic"
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
	s, client, r := restartedFromAnOlderSnapshot(t)
	ctx := context.Background()
	const limit = 100

	fresh := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name})
	assert.True(t, reserve(t, fresh, r(10, 10), limit).OK, "nothing tells this one")
	requireWindowLost(t, s, r, 60+10, 3, 5, 5, limit, "")
	_, err := fresh.Reserve(ctx, r(11, 1), limit)
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

// What is not a loss raises no alarm: a failover to a replica that has the
// data; a window that ends and the next that opens, for a store whose
// clock runs behind the fleet's; a FLUSHDB of another database. (This
// held; kept as the record.)
func TestABudgetStoreRaisesNoAlarmWithoutALoss(t *testing.T) {
	ctx := context.Background()
	primary, replica := startRedis(t, redisOptions{}), startRedis(t, redisOptions{})
	var addr atomic.Pointer[string]
	addr.Store(&primary.Addr)
	opts := testClientOptions(primary.Addr)
	opts.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: testDialTimeout}).DialContext(ctx, network, *addr.Load())
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	rc := replica.client(t)
	host, port, _ := net.SplitHostPort(primary.Addr)
	require.NoError(t, rc.SlaveOf(ctx, host, port).Err())

	s := newStore(t, client, BudgetStoreConfig{})
	other := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name})
	start := time.Now().Truncate(time.Hour)
	in := func(window string, from time.Time) func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return func(id uint64, amount httpguard.Money) httpguard.Reservation {
			return httpguard.Reservation{ID: id, Window: window, Start: from, End: from.Add(time.Hour), Amount: amount, Lease: time.Minute}
		}
	}
	r := in("w", start)
	const limit = 1000
	require.True(t, reserve(t, s, r(1, 10), limit).OK)
	require.True(t, reserve(t, other, r(2, 10), limit).OK)
	require.Eventually(t, func() bool {
		return rc.HGet(ctx, s.keys.newest(), "born").Val() == client.HGet(ctx, s.keys.newest(), "born").Val() &&
			rc.HGet(ctx, s.keys.window("w"), "h").Val() == "20"
	}, 10*time.Second, 5*time.Millisecond, "the replica has the data")

	// Failover: the replica, promoted, takes the primary's place.
	primary.kill()
	require.NoError(t, rc.SlaveOf(ctx, "NO", "ONE").Err())
	addr.Store(&replica.Addr)
	require.Eventually(t, func() bool {
		res, err := s.Reserve(ctx, r(3, 10), limit)
		return err == nil && res.OK
	}, 10*time.Second, 10*time.Millisecond, "no alarm after a failover to a replica with the data")
	assert.True(t, reserve(t, other, r(4, 10), limit).OK)

	// A FLUSHDB of another database on the same server.
	db1 := redis.NewClient(&redis.Options{Addr: replica.Addr, DB: 1})
	defer db1.Close()
	require.NoError(t, db1.Set(ctx, "x", "y", 0).Err())
	require.NoError(t, db1.FlushDB(ctx).Err())
	assert.True(t, reserve(t, s, r(5, 10), limit).OK, "another database flushed")

	// The next window opens normally; a store whose clock runs behind
	// asks for the window that ended on the fleet's clock and follows.
	boundary := time.Now().Add(300 * time.Millisecond)
	short := func(id uint64) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "v1", Start: boundary.Add(-time.Hour), End: boundary, Amount: 10, Lease: time.Minute}
	}
	late := func(id uint64) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "v2", Start: boundary, End: boundary.Add(time.Hour), Amount: 10, Lease: time.Minute}
	}
	s2 := newStore(t, client, BudgetStoreConfig{})
	behind := newStore(t, client, BudgetStoreConfig{Name: s2.cfg.Name})
	behind.now = func() time.Time { return time.Now().Add(-3 * time.Second) }
	require.True(t, reserve(t, behind, short(8), limit).OK)
	require.True(t, reserve(t, s2, short(9), limit).OK)
	time.Sleep(time.Until(boundary) + 10*time.Millisecond)
	require.True(t, reserve(t, s2, late(10), limit).OK, "the next window opens")
	res := reserve(t, behind, short(11), limit)
	assert.True(t, res.OK)
	assert.Equal(t, "v2", res.Window, "the store behind follows the fleet there, no alarm")
	require.True(t, reserve(t, behind, late(12), limit).OK)
	assert.True(t, reserve(t, s2, late(13), limit).OK)
}

// Stores that reserved in the window race, from many goroutines, the first
// reservations on a Redis restarted empty: none is admitted, whichever
// reaches Redis first, and every one is told the same cause. (This held;
// it runs the stores' memory of born under -race.)
func TestStoresRacingAfterARestartAllNoticeTheLoss(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: 10, Lease: time.Minute}
	}
	a := newStore(t, client, BudgetStoreConfig{})
	b := newStore(t, client, BudgetStoreConfig{Name: a.cfg.Name})
	require.True(t, reserve(t, a, r(1), 100).OK)
	require.True(t, reserve(t, b, r(2), 100).OK)
	srv.kill()
	srv.restart()

	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range 16 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Reserve(ctx, r(uint64(10+i)), 100)
			if err == nil && res.OK {
				admitted.Add(1)
			} else if assert.ErrorIs(t, err, ErrUnavailable) {
				assert.ErrorContains(t, err, "restarted without it")
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, admitted.Load(), "admitted into the emptied window")
	assert.Equal(t, "w", client.HGet(ctx, a.keys.newest(), "lost").Val())
}
