package redisguard

// Tests of the second adversarial review of 2026-11-30 (fleet mode). Each
// failed on main before its fix.

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// evictUntilGone fills srv's Redis with an application's cache entries
// (each with a day's TTL, longer than any of the budget's keys) under a
// maxmemory that leaves no room for them, until key is evicted. It is what
// a Redis shared with a cache does under a volatile-* maxmemory-policy,
// the default of managed Redis (ElastiCache, Azure: volatile-lru).
func evictUntilGone(t *testing.T, c redis.UniversalClient, policy, key string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", policy).Err())
	info, err := c.Info(ctx, "memory").Result()
	require.NoError(t, err)
	var used int64
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	require.NotZero(t, used)
	require.NoError(t, c.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used+4<<20, 10)).Err())
	t.Cleanup(func() { c.ConfigSet(context.Background(), "maxmemory", "0") })
	value := strings.Repeat("x", 4096)
	for i := 0; ; i++ {
		require.Less(t, i, 100_000, "%s was never evicted", key)
		require.NoError(t, c.Set(ctx, "app:cache:"+strconv.Itoa(i), value, 24*time.Hour).Err())
		if i%64 == 0 && c.Exists(ctx, key).Val() == 0 {
			return
		}
	}
}

// A Redis that evicts keys under memory pressure (any maxmemory-policy but
// noeviction) may drop a window's keys, which expire after the window and
// so are the first a volatile-* policy takes. The spend of the window was
// then forgotten in silence, and the fleet admitted a second Limit in the
// same window. The newest window's key never expires, so no volatile-*
// policy takes it: a window it names, not yet ended, whose keys are gone
// was lost, and the store refuses it (fail closed) instead of reopening it
// empty.
func TestABudgetStoreDoesNotForgetTheSpendRedisEvicted(t *testing.T) {
	for _, policy := range []string{"volatile-ttl", "volatile-lru"} {
		t.Run(policy, func(t *testing.T) {
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
			require.True(t, reserve(t, s, r(2, 30), limit).OK, "an attempt in flight")

			evictUntilGone(t, client, policy, s.keys.window("w"))
			client.ConfigSet(ctx, "maxmemory", "0")
			_, err = s.Settle(ctx, "w", 2, 30) // the attempt in flight ends first, making the window again
			require.NoError(t, err, "a charge is kept")

			var admitted httpguard.Money = 90
			for id := uint64(2); id < 5; id++ {
				res, err := s.Reserve(ctx, r(id, 50), limit)
				if err == nil && res.OK {
					admitted += 50
				}
			}
			assert.LessOrEqual(t, admitted, httpguard.Money(limit), "Redis forgot the window's spend and the store admitted past the limit")
			_, err = s.Reserve(ctx, r(5, 1), limit)
			assert.ErrorIs(t, err, ErrUnavailable, "fail closed")
			assert.ErrorContains(t, err, "maxmemory-policy", "the error names the cause")

			failOpen := newStore(t, client, BudgetStoreConfig{Name: s.cfg.Name, FailOpenShare: 0.1})
			assert.True(t, reserve(t, failOpen, r(6, 10), limit).OK, "a store failing open admits from its share")
			assert.False(t, reserve(t, failOpen, r(7, 1), limit).OK, "and no more")
			_, err = failOpen.Settle(ctx, "w", 6, 10)
			assert.NoError(t, err)
		})
	}
}

// A lease of math.MaxInt64 (a Budget whose reservations should never end
// by themselves) overflowed when rounded up to milliseconds: the hold was
// given a lease that had ended, and the next call released it, so that
// another attempt was admitted into money in flight.
func TestALeaseOfMaxDurationHoldsTheMoney(t *testing.T) {
	s := newStore(t, startRedis(t, redisOptions{}).client(t), BudgetStoreConfig{})
	r := func(id uint64, amount httpguard.Money) httpguard.Reservation {
		return httpguard.Reservation{ID: id, Window: "lifetime", Amount: amount, Lease: math.MaxInt64}
	}
	require.True(t, reserve(t, s, r(1, 60), 100).OK)
	require.NoError(t, s.Renew(context.Background(), "lifetime", []uint64{1}, math.MaxInt64))
	assert.False(t, reserve(t, s, r(2, 60), 100).OK, "60 are held")
	assert.Equal(t, [2]httpguard.Money{0, 60}, totals(t, s, "lifetime"))
}

// A live process's holds outlast a Redis outage longer than their lease
// only once its probe finds Redis back and holds them again. In between
// (up to a ProbeInterval, a second by default), another process that did
// not call Redis during the outage, and so never failed over, reserves
// at once: its script ends the live process's leases on Redis's clock,
// which ran on while nobody could renew them, and admits it into money
// the provider is about to bill. A Sentinel failover (30 s to notice by
// default, then the election) is longer than two thirds of the default
// lease of a minute. So lease time does not run while nobody can reach
// Redis (see leaseClock).
func TestAnIdleProcessIsNotAdmittedIntoTheHoldsOfALiveOneWhenRedisComesBack(t *testing.T) {
	// The second process calls at once after the outage: it never failed
	// over, so it has no probe to wait for.
	assertHoldsOutlastAnOutage(t, BudgetStoreConfig{Name: "idle"}, func(srv *redisServer, lease time.Duration) {
		srv.kill()
		time.Sleep(lease * 3 / 2) // the first's renewals fail, and its lease ends on Redis's clock
		srv.restart()
	})
}

// Under an allkeys-* maxmemory-policy, Redis may evict the key naming the
// newest window too, and then nothing tells that a window's money is gone.
// The store warns, once, when its Redis may evict.
func TestABudgetStoreWarnsOfARedisThatMayEvictItsKeys(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	ctx := context.Background()
	var logs syncBuffer
	s := newStore(t, client, BudgetStoreConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	reserve(t, s, lifetime(1, 10), 100)
	assert.NotContains(t, logs.String(), "maxmemory", "no maxmemory: nothing is evicted")

	require.NoError(t, client.ConfigSet(ctx, "maxmemory", "1gb").Err())
	require.NoError(t, client.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	s = newStore(t, client, BudgetStoreConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	reserve(t, s, lifetime(1, 10), 100)
	reserve(t, s, lifetime(2, 10), 100)
	assert.Equal(t, 1, strings.Count(logs.String(), "maxmemory-policy=allkeys-lru"), "warned once: %s", logs.String())
	assert.Contains(t, logs.String(), "level=WARN")
}

// OnSettle is told what each attempt was charged: the spend metrics and
// the proxy's access log count it. While Redis is away a store keeps the
// charges it cannot record, to add them when Redis is back, and its Settle
// says so with an error; the Budget then logged the error and skipped
// OnSettle, so that every attempt in flight when Redis went away (a store
// failing closed or open) was missing from the spend the hooks counted,
// although the provider billed it and the store charged it.
func TestOnSettleHearsOfTheChargesAStoreKeepsWhileRedisIsAway(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	const maxTokens = 100
	api := newFaultServer(t, httpguardtest.Config{CompletionTokens: maxTokens})
	s := newStore(t, srv.client(t), BudgetStoreConfig{FailOpenShare: 0.5, ProbeInterval: time.Hour})
	var mu sync.Mutex
	var charged httpguard.Money
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: testPrices, Store: s,
		OnSettle: func(st httpguard.Settlement) {
			mu.Lock()
			charged += st.Charged
			mu.Unlock()
		}})
	require.NoError(t, err)
	client := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}
	post := func() {
		resp, err := client.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(maxTokens)))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	post()
	inFlight, err := client.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(maxTokens)))
	require.NoError(t, err)
	srv.kill()
	io.Copy(io.Discard, inFlight.Body) // settled while Redis is away: kept for later
	inFlight.Body.Close()
	post() // from the local share
	mu.Lock()
	assert.Equal(t, billed(api), charged, "OnSettle heard of every charge")
	mu.Unlock()
	srv.restart() // for Close to record the share's spend
}
