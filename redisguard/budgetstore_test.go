package redisguard

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var storeNames atomic.Int64

// testTimeout is the stores' Timeout in tests, far above DefaultTimeout:
// the machines running them may be loaded, and a Redis call that takes
// longer than a few hundred milliseconds there is no outage. A killed
// Redis refuses connections at once; the tests of slow servers set their
// own Timeout.
const testTimeout = 5 * time.Second

// newStore returns a store of c on client, under a Name no other store of
// the test run uses unless c sets one; it is closed when the test ends.
// Unless c sets one, its Timeout is testTimeout.
func newStore(t testing.TB, client redis.UniversalClient, c BudgetStoreConfig) *BudgetStore {
	t.Helper()
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s-%d", t.Name(), storeNames.Add(1))
	}
	if c.Timeout == 0 {
		c.Timeout = testTimeout
	}
	s, err := NewBudgetStore(client, c)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

func TestBudgetStoreConforms(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	storetest.BudgetStore(t, func(t *testing.T) httpguard.BudgetStore { return newStore(t, client, BudgetStoreConfig{}) })
}

// On a Cluster, a script whose keys are in different slots fails with
// CROSSSLOT: the suite passing there shows every script's keys share one.
func TestBudgetStoreConformsOnACluster(t *testing.T) {
	client := startRedis(t, redisOptions{cluster: true}).client(t)
	storetest.BudgetStore(t, func(t *testing.T) httpguard.BudgetStore { return newStore(t, client, BudgetStoreConfig{}) })
}

func reserve(t *testing.T, s httpguard.BudgetStore, r httpguard.Reservation, limit httpguard.Money) httpguard.ReserveResult {
	t.Helper()
	res, err := s.Reserve(context.Background(), r, limit)
	require.NoError(t, err)
	return res
}

func totals(t *testing.T, s httpguard.BudgetStore, window string) [2]httpguard.Money {
	t.Helper()
	settled, held, err := s.Totals(context.Background(), window)
	require.NoError(t, err)
	return [2]httpguard.Money{settled, held}
}

// onEachServer runs test against a real Redis and against miniredis, which
// runs Lua in Go (gopher-lua) and serves the demo that needs no setup. The
// conformance suite runs on the real server only: miniredis compiles each
// script at each call, too slowly for its concurrent parts under the race
// detector.
func onEachServer(t *testing.T, test func(t *testing.T, newClient func() redis.UniversalClient)) {
	t.Run("Redis", func(t *testing.T) {
		srv := startRedis(t, redisOptions{})
		test(t, func() redis.UniversalClient { return srv.client(t) })
	})
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		test(t, func() redis.UniversalClient {
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { c.Close() })
			return c
		})
	})
}

// Lua numbers are doubles: near MaxBudgetLimit (1e18 nano-dollars) they
// are 128 apart, so a script adding money as numbers would admit 2 more
// where only 1 fits, and lose nano-dollars in every total.
func TestBudgetStoreMoneyIsExactUpToMaxBudgetLimit(t *testing.T) {
	onEachServer(t, moneyIsExact)
}

func moneyIsExact(t *testing.T, newClient func() redis.UniversalClient) {
	s := newStore(t, newClient(), BudgetStoreConfig{})
	ctx := context.Background()
	const limit = httpguard.MaxBudgetLimit
	lifetime := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "lifetime", Amount: amount}
	}
	a := reserve(t, s, lifetime(1, limit-1), limit)
	require.True(t, a.OK)
	assert.Equal(t, limit-1, a.Held)
	assert.False(t, reserve(t, s, lifetime(2, 2), limit).OK, "one nano-dollar too many")
	b := reserve(t, s, lifetime(3, 1), limit)
	require.True(t, b.OK, "exactly the last nano-dollar fits")
	assert.Equal(t, limit, b.Held)

	settled, err := s.Settle(ctx, "lifetime", 1, limit-3)
	require.NoError(t, err)
	assert.Equal(t, limit-3, settled)
	assert.Equal(t, [2]httpguard.Money{limit - 3, 1}, totals(t, s, "lifetime"))
	assert.True(t, reserve(t, s, lifetime(4, 2), limit).OK, "3 left, 1 held: 2 fit")
	assert.False(t, reserve(t, s, lifetime(5, 1), limit).OK, "and then nothing")

	// Settled money saturates at twice MaxBudgetLimit, exactly.
	settled, err = s.Settle(ctx, "lifetime", 6, maxSettled-1)
	require.NoError(t, err)
	assert.Equal(t, maxSettled, settled)
	settled, err = s.Settle(ctx, "lifetime", 7, 5)
	require.NoError(t, err)
	assert.Equal(t, maxSettled, settled)
}

func TestBudgetStoreFollowsTheNewestWindowAnotherProcessOpened(t *testing.T) {
	onEachServer(t, followsTheNewestWindow)
}

func followsTheNewestWindow(t *testing.T, newClient func() redis.UniversalClient) {
	a := newStore(t, newClient(), BudgetStoreConfig{Name: "shared"})
	b := newStore(t, newClient(), BudgetStoreConfig{Name: "shared"})
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	require.True(t, reserve(t, a, httpguard.Reservation{ID: 1, Window: "day:2", Start: day.AddDate(0, 0, 1), End: day.AddDate(0, 0, 2), Amount: 60}, 100).OK)
	late := reserve(t, b, httpguard.Reservation{ID: 2, Window: "day:1", Start: day, End: day.AddDate(0, 0, 1), Amount: 30}, 100)
	assert.True(t, late.OK)
	assert.Equal(t, "day:2", late.Window, "b's clock lags: its reservation goes to the window a opened")
	assert.Equal(t, httpguard.Money(90), late.Held)
	assert.False(t, reserve(t, b, httpguard.Reservation{ID: 3, Window: "day:1", Start: day, End: day.AddDate(0, 0, 1), Amount: 11}, 100).OK)
	other := newStore(t, newClient(), BudgetStoreConfig{Name: "another cap"})
	assert.True(t, reserve(t, other, httpguard.Reservation{ID: 4, Window: "day:1", Start: day, Amount: 100}, 100).OK, "another Name is another cap")
}

func TestBudgetStoreWindowKeysExpireAfterTheWindowEnds(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	const retention = 10 * time.Minute
	s := newStore(t, client, BudgetStoreConfig{Retention: retention})
	ctx := context.Background()
	start := time.Now().Truncate(time.Hour)
	end := start.Add(time.Hour)
	reserve(t, s, httpguard.Reservation{ID: 1, Window: "hour", Start: start, End: end, Amount: 1, Lease: time.Minute}, 100)
	want := time.Until(end.Add(retention))
	for _, key := range []string{s.keys.window("hour"), s.keys.leases("hour")} {
		ttl, err := client.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.InDelta(t, want.Seconds(), ttl.Seconds(), 5, "%s lives until its window ends, and Retention more", key)
	}
	ttl, err := client.PTTL(ctx, s.keys.newest()).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the newest window is never forgotten")

	forever := newStore(t, client, BudgetStoreConfig{Retention: retention})
	reserve(t, forever, httpguard.Reservation{ID: 2, Window: "lifetime", Amount: 1, Lease: time.Minute}, 100)
	ttl, err = client.PTTL(ctx, forever.keys.window("lifetime")).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the window that never ends is never dropped")
	ttl, err = client.PTTL(ctx, forever.keys.newest()).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the newest window is never forgotten")
}

// The mirror of TestAWindowIsNotForgottenBeforeItEndsWhenRedisClockRunsAhead:
// the fleet's clocks run ahead of Redis's by more than Retention (1 s and
// 100 ms here; with the default hour, a fleet more than an hour ahead).
// A window opens only once it has started on the server's clock, so the
// fleet, in the next window on its clocks, is kept in the current one
// until Redis's clock leaves it too: the current window's keys must live
// until then, and Retention more. They expired Retention after the end as
// the fleet's clocks read it, and the fleet, moved back into a window
// whose keys were gone, was refused as if Redis had lost its spend
// (ErrUnavailable, fail closed) at every window boundary, for as long as
// the skew less Retention.
func TestAFleetWhoseClocksRunAheadOfRedisKeepsTheWindowRedisIsStillIn(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	const retention = 100 * time.Millisecond
	const skew = time.Second
	s := newStore(t, srv.client(t), BudgetStoreConfig{Retention: retention})
	s.now = func() time.Time { return time.Now().Add(skew) }
	const limit = 100
	end := time.Now().Add(skew + retention) // the current window ends 100 ms from now on the fleet's clocks, 1.1 s on Redis's
	current := httpguard.Reservation{ID: 1, Window: "w:1", Start: end.Add(-time.Hour), End: end, Amount: 10, Lease: time.Minute}
	require.True(t, reserve(t, s, current, limit).OK)
	_, err := s.Settle(context.Background(), "w:1", 1, 10)
	require.NoError(t, err)

	// The fleet's clocks are now 200 ms into the next window, Redis's 800
	// ms before the current one ends; the keys would have expired 100 ms
	// ago, Retention after the end on the fleet's clocks.
	time.Sleep(3 * retention)
	next := httpguard.Reservation{ID: 2, Window: "w:2", Start: end, End: end.Add(time.Hour), Amount: 10, Lease: time.Minute}
	res, err := s.Reserve(context.Background(), next, limit)
	require.NoError(t, err, "Redis lost nothing")
	assert.True(t, res.OK, "%+v", res)
	assert.Equal(t, "w:1", res.Window, "the window Redis's clock is still in")
	assert.Equal(t, httpguard.Money(10), res.Settled, "its spend is kept")
}

func TestNewBudgetStoreRejectsInvalidConfig(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { client.Close() })
	for _, tc := range []struct {
		c    BudgetStoreConfig
		want string
	}{
		{BudgetStoreConfig{}, "Name is required"},
		{BudgetStoreConfig{Name: "openai", Prefix: "acme:prod"}, "Prefix must not hold ':'"}, // {acme:prod:openai} is also Prefix acme, Name prod:openai
		{BudgetStoreConfig{Name: "a}b"}, "Name must not hold '{' or '}'"},
		{BudgetStoreConfig{Name: "n", Timeout: -1}, "Timeout must be >= 0"},
		{BudgetStoreConfig{Name: "n", Retention: -1}, "Retention must be >= 0"},
		{BudgetStoreConfig{Name: "n", FailOpenShare: 1.5}, "FailOpenShare must be in [0, 1]"},
		{BudgetStoreConfig{Name: "n", FailOpenShare: math.NaN()}, "FailOpenShare must be in [0, 1]"},
		{BudgetStoreConfig{Name: "n", ProbeInterval: -1}, "ProbeInterval must be >= 0"},
	} {
		_, err := NewBudgetStore(client, tc.c)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redisguard: budget store: "+tc.want)
	}
	_, err := NewBudgetStore(nil, BudgetStoreConfig{Name: "n"})
	assert.ErrorContains(t, err, "client is nil")
}

// testPrices make costs easy to check: a prompt token costs 1,000
// nano-dollars, an output token 2,000.
var testPrices = httpguard.PriceTable{"m": {Input: httpguard.Dollar, Output: 2 * httpguard.Dollar}}

func chatBody(maxTokens int) string {
	return fmt.Sprintf(`{"model":"m","max_tokens":%d,"messages":[{"role":"user","content":"hello"}]}`, maxTokens)
}

// Leases, renewals and pub/sub, on both servers.
func TestBudgetStoreLeasesEndAndWakeWatchers(t *testing.T) {
	onEachServer(t, leasesEndAndWakeWatchers)
}

func leasesEndAndWakeWatchers(t *testing.T, newClient func() redis.UniversalClient) {
	client := newClient()
	a := newStore(t, client, BudgetStoreConfig{Name: "leases"})
	b := newStore(t, newClient(), BudgetStoreConfig{Name: "leases"})
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "lifetime", Amount: amount, Lease: lease}
	}
	require.True(t, reserve(t, a, r(1, 40), 100).OK)
	require.True(t, reserve(t, a, r(2, 50), 100).OK)
	refused := reserve(t, b, r(3, 20), 100)
	require.False(t, refused.OK)
	assert.Positive(t, refused.FreeIn)
	assert.LessOrEqual(t, refused.FreeIn, lease)

	woke := a.Watch(ctx, "lifetime")
	waitSubscribed(t, client, a.channel)
	for deadline := time.Now().Add(10 * time.Second); totals(t, b, "lifetime")[1] != 50; {
		require.NoError(t, a.Renew(ctx, "lifetime", []uint64{2}, lease))
		require.False(t, time.Now().After(deadline), "the lease of 1 never ended")
		time.Sleep(lease / 5)
	}
	select {
	case <-woke: // b's Totals found the lease ended, and said so
	case <-time.After(10 * time.Second):
		t.Fatal("the end of a lease woke no watcher")
	}
	settled, err := b.Settle(ctx, "lifetime", 2, 30)
	require.NoError(t, err)
	assert.Equal(t, httpguard.Money(30), settled)
	assert.Equal(t, [2]httpguard.Money{30, 0}, totals(t, a, "lifetime"))
}
