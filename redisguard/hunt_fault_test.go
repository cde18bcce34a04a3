package redisguard

// Tests of the Redis-fault hunt of 2026-12-04 (fleet mode). Each failed on
// main before its fix.

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
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

// A Redis without persistence that restarts (or is replaced by an empty
// one) mid-window forgets the window's spend and the newest window's key
// with it. A store that reserved in that window before knows it: it must
// not reopen the window empty.
func TestABudgetStoreNoticesARedisThatRestartedEmptyMidWindow(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	s := newStore(t, client, BudgetStoreConfig{})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: amount, Lease: time.Minute}
	}
	const limit = 100
	require.True(t, reserve(t, s, r(1, 60), limit).OK)
	_, err := s.Settle(ctx, "w", 1, 60)
	require.NoError(t, err)
	idle := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name})
	require.False(t, reserve(t, idle, r(100, 50), limit).OK, "a store that reserved in the window too, and then idles")

	srv.kill()
	srv.restart() // empty: no persistence

	requireWindowLost(t, s, r, 60, 2, 8, 9, limit, "restarted without it")

	// A process that never saw the old Redis opens the window first, and
	// is refused from the first reservation of one that did.
	srv.kill()
	srv.restart()
	fresh := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name})
	assert.True(t, reserve(t, fresh, r(10, 10), limit).OK, "nothing tells this one")
	_, err = s.Reserve(ctx, r(11, 1), limit)
	assert.ErrorIs(t, err, ErrUnavailable, "the store that saw the old Redis knows")
	_, err = fresh.Reserve(ctx, r(12, 1), limit)
	assert.ErrorIs(t, err, ErrUnavailable, "and the fleet is told")
	_, err = fresh.Settle(ctx, "w", 10, 10)
	require.NoError(t, err)

	// The loss accepted, the window opens again for both.
	require.NoError(t, client.HDel(ctx, s.keys.newest(), "lost").Err())
	assert.True(t, reserve(t, s, r(13, 10), limit).OK)
	assert.True(t, reserve(t, fresh, r(14, 10), limit).OK)
	assert.True(t, reserve(t, idle, r(101, 10), limit).OK, "the loss, accepted, is not noticed again by a store that idled meanwhile")
	assert.Equal(t, [2]httpguard.Money{10, 30}, totals(t, s, "w"))

	// The next window opens as ever.
	next := httpguard.Reservation{ID: 15, Window: "w2", Start: start.Add(-time.Minute), End: start.Add(2 * time.Hour), Amount: 10, Lease: time.Minute}
	srv.kill()
	srv.restart()
	assert.True(t, reserve(t, s, next, limit).OK, "a window this store never reserved in is not lost")
}

// Under an allkeys-* maxmemory-policy Redis may evict the key naming the
// newest window too, which no script could tell from a window never
// opened: the window's spend was forgotten unseen. The name of Redis's
// data goes with that key, so a store that reserved in the window before
// notices.
func TestABudgetStoreNoticesThatAllkeysEvictionTookTheNewestWindow(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newStore(t, client, BudgetStoreConfig{})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: amount, Lease: time.Minute}
	}
	const limit = 100
	require.True(t, reserve(t, s, r(1, 60), limit).OK)
	_, err := s.Settle(ctx, "w", 1, 60)
	require.NoError(t, err)

	evictUntilGone(t, client, "allkeys-random", s.keys.newest())
	client.Del(ctx, s.keys.window("w"), s.keys.leases("w")) // went too, or will
	require.NoError(t, client.ConfigSet(ctx, "maxmemory", "0").Err())

	requireWindowLost(t, s, r, 60, 2, 5, 5, limit, "")
}

// While a Cluster migrates the budget's slot to another node, a script
// whose keys are some on one node and some on the other gets TRYAGAIN:
// the store fails over (closed) with that cause, at once, and is back by
// itself once the slot has moved, with every charge counted once. (This
// held before the hunt; it is kept as the record of what a migration
// does.)
func TestABudgetStoreFailsClosedDuringASlotMigrationAndComesBack(t *testing.T) {
	a, b := twoNodeCluster(t)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{a.Addr, b.Addr}, ContextTimeoutEnabled: true,
		DialTimeout: testDialTimeout, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	const timeout = 300 * time.Millisecond
	s := newStore(t, client, BudgetStoreConfig{Timeout: timeout, ProbeInterval: 10 * time.Millisecond})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: amount, Lease: time.Minute}
	}
	require.True(t, reserve(t, s, r(1, 10), 1000).OK)
	_, err := s.Settle(ctx, "w", 1, 10)
	require.NoError(t, err)
	require.True(t, reserve(t, s, r(2, 10), 1000).OK, "an attempt in flight throughout")

	slot, err := client.ClusterKeySlot(ctx, s.keys.newest()).Result()
	require.NoError(t, err)
	src, dst := a, b
	if slot >= 8192 {
		src, dst = b, a
	}
	cs, cd := redis.NewClient(&redis.Options{Addr: src.Addr}), redis.NewClient(&redis.Options{Addr: dst.Addr})
	defer cs.Close()
	defer cd.Close()
	srcID, err := cs.Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)
	dstID, err := cd.Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)
	sl := strconv.FormatInt(slot, 10)
	require.NoError(t, cd.Do(ctx, "CLUSTER", "SETSLOT", sl, "IMPORTING", srcID).Err())
	require.NoError(t, cs.Do(ctx, "CLUSTER", "SETSLOT", sl, "MIGRATING", dstID).Err())

	var settled httpguard.Money = 10
	id := uint64(3)
	try := func() (ok bool, err error) {
		began := time.Now()
		res, err := s.Reserve(ctx, r(id, 10), 1000)
		assert.Less(t, time.Since(began), 2*timeout, "a reservation ends within its Timeout")
		if err == nil && res.OK {
			_, err := s.Settle(ctx, "w", id, 10)
			require.NoError(t, err)
			settled += 10
		}
		id++
		return err == nil && res.OK, err
	}
	keys, err := cs.Do(ctx, "CLUSTER", "GETKEYSINSLOT", sl, "100").StringSlice()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	host, port, _ := strings.Cut(dst.Addr, ":")
	for i, k := range keys {
		require.NoError(t, cs.Migrate(ctx, host, port, k, 0, 5*time.Second).Err())
		if i < len(keys)-1 {
			_, err := try()
			require.ErrorIs(t, err, ErrUnavailable, "keys on both nodes: fail closed")
			assert.ErrorContains(t, err, "TRYAGAIN", "the error names the cause")
		}
	}
	for _, c := range []*redis.Client{cs, cd} {
		require.NoError(t, c.Do(ctx, "CLUSTER", "SETSLOT", sl, "NODE", dstID).Err())
	}
	require.Eventually(t, func() bool { ok, _ := try(); return ok }, 10*time.Second, 20*time.Millisecond, "back by itself")
	assert.Equal(t, [2]httpguard.Money{settled, 10}, totals(t, s, "w"), "every charge counted once, the attempt in flight still held")
}

// A Redis that may evict (a maxmemory-policy other than noeviction) drops
// the limiter's keys too, and a volatile-* policy takes them first, as they
// all expire: a bucket evicted is full again (a burst more for the fleet),
// a pause evicted is forgotten (the fleet sends while the provider asked
// it to wait; a pause's key, expiring soonest, is the first volatile-ttl
// takes). The BudgetStore warned of such a Redis; the LimitStore said
// nothing.
func TestALimitStoreWarnsOfARedisThatMayEvictItsKeys(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	ctx := context.Background()
	var logs syncBuffer
	l := newLimitStore(t, client, LimitStoreConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rps := httpguard.BucketLimit{Rate: 100, Burst: 10}
	take(t, l, "k", rps, noLimit, 0)
	assert.NotContains(t, logs.String(), "maxmemory", "no maxmemory: nothing is evicted")

	require.NoError(t, client.ConfigSet(ctx, "maxmemory", "1gb").Err())
	require.NoError(t, client.ConfigSet(ctx, "maxmemory-policy", "volatile-ttl").Err())
	l = newLimitStore(t, client, LimitStoreConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	take(t, l, "k", rps, noLimit, 0)
	take(t, l, "k", rps, noLimit, 0)
	assert.Equal(t, 1, strings.Count(logs.String(), "maxmemory-policy=volatile-ttl"), "warned once: %s", logs.String())
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "pause")
}

// A Redis that restarts from an RDB snapshot (Redis's default persistence)
// taken before the current window opened comes back naming the window
// before as the newest: the current window's spend was forgotten, and the
// next reservation opened it again, empty. A store that reserved in the
// current window under the same data knows the newest window cannot go
// back.
func TestABudgetStoreNoticesARedisThatRestartedFromAnOlderSnapshot(t *testing.T) {
	s, _, r := restartedFromAnOlderSnapshot(t)
	const limit = 100
	requireWindowLost(t, s, r, 60, 3, 6, 6, limit, "snapshot")
}

// A Redis out of memory under noeviction refuses a script's first write
// that may grow memory, before it has written anything: the script fails
// whole, never half-way. A reservation fails closed with Redis's cause;
// a settlement (whose first write frees memory) is still recorded; the
// store is back by itself once Redis has memory again, its window's held
// money the sum of its holds. (This held before the hunt.)
func TestABudgetStoreOnARedisOutOfMemoryFailsClosedWhole(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newStore(t, client, BudgetStoreConfig{ProbeInterval: 10 * time.Millisecond})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "w", Start: start, End: start.Add(time.Hour), Amount: amount, Lease: time.Minute}
	}
	const limit = 100
	require.True(t, reserve(t, s, r(1, 60), limit).OK)
	require.True(t, reserve(t, s, r(2, 10), limit).OK)
	info, err := client.Info(ctx, "memory").Result()
	require.NoError(t, err)
	var used int64
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	require.NoError(t, client.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used+1<<20, 10)).Err())
	t.Cleanup(func() { client.ConfigSet(context.Background(), "maxmemory", "0") })
	value := strings.Repeat("x", 4096)
	for i := 0; client.Set(ctx, "app:cache:"+strconv.Itoa(i), value, 0).Err() == nil; i++ {
		require.Less(t, i, 100_000)
	}

	_, err = s.Settle(ctx, "w", 1, 50)
	assert.NoError(t, err, "a settlement is recorded")
	_, err = s.Reserve(ctx, r(3, 10), limit)
	require.ErrorIs(t, err, ErrUnavailable, "fail closed")
	assert.ErrorContains(t, err, "OOM", "the error names the cause")

	require.NoError(t, client.ConfigSet(ctx, "maxmemory", "0").Err())
	require.Eventually(t, func() bool {
		res, err := s.Reserve(ctx, r(4, 10), limit)
		return err == nil && res.OK
	}, 10*time.Second, 10*time.Millisecond, "back by itself")
	assert.Equal(t, [2]httpguard.Money{50, 20}, totals(t, s, "w"), "the settlement counted, the refused reservation holds nothing")
	w, err := client.HGetAll(ctx, s.keys.window("w")).Result()
	require.NoError(t, err)
	var holds int64
	for f, v := range w {
		if strings.HasPrefix(f, "i:") {
			n, _ := strconv.ParseInt(v, 10, 64)
			holds += n
		}
	}
	assert.Equal(t, strconv.FormatInt(holds, 10), w["h"], "held money is the sum of the holds: %v", w)
}

// requireWindowLost checks that s, whose window Redis lost after settled
// was spent there, admits nothing past limit for reservations r(id, 50)
// with IDs from to before until, then fails closed on r(last, 1), naming
// cause ("": any).
func requireWindowLost(t *testing.T, s *BudgetStore, r func(uint64, httpguard.Money) httpguard.Reservation, settled httpguard.Money, from, until, last uint64, limit httpguard.Money, cause string) {
	t.Helper()
	ctx := context.Background()
	admitted := settled
	for id := from; id < until; id++ {
		res, err := s.Reserve(ctx, r(id, 50), limit)
		if err == nil && res.OK {
			admitted += 50
		}
	}
	assert.LessOrEqual(t, admitted, limit, "Redis forgot the window's spend and the store admitted past the limit")
	_, err := s.Reserve(ctx, r(last, 1), limit)
	assert.ErrorIs(t, err, ErrUnavailable, "fail closed")
	if cause != "" {
		assert.ErrorContains(t, err, cause, "the error names the cause")
	}
}

// restartedFromAnOlderSnapshot runs a Redis whose store s spent 10 in the
// window before (w1), then, after a snapshot, 60 of a Limit of 100 in the
// current one (w2), whose reservations r makes; and restarts Redis from
// the snapshot, which names w1 as the newest window.
func restartedFromAnOlderSnapshot(t *testing.T) (s *BudgetStore, client redis.UniversalClient, r func(uint64, httpguard.Money) httpguard.Reservation) {
	srv := startRedis(t, redisOptions{})
	client = srv.client(t)
	s = newStore(t, client, BudgetStoreConfig{})
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

	return s, client, r
}
