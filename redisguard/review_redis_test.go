package redisguard

// Tests of the adversarial review of 2026-12-01 (fleet mode on Redis,
// branch h-redis). Each failed on main before its fix.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 429 to one replica pauses every replica, whatever becomes of the
// request that heard it. The Limiter set the pause in the store with the
// request's context: when that context ended as the 429 came back (the
// caller's deadline, an AttemptTimeout, a client that gave up), the call
// to Redis was cut short and the pause held only in the process that saw
// it, while every other replica went on sending to the provider that said
// stop.
func TestA429PausesTheFleetWhenItsRequestsContextEnds(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(30*time.Second)))
	replica := func(base http.RoundTripper) *http.Client {
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "paused fleet"})
		l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, MaxWait: 10 * time.Millisecond, Store: s})
		require.NoError(t, err)
		return &http.Client{Transport: httpguard.Chain(base, l)}
	}
	// a's caller gives up as the 429 comes back.
	ctx, cancel := context.WithCancel(context.Background())
	a := replica(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := api.Client().Transport.RoundTrip(r)
		cancel()
		return resp, err
	}))
	b := replica(api.Client().Transport)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.BaseURL()+"/chat/completions", strings.NewReader(chatBody(10)))
	require.NoError(t, err)
	if resp, err := a.Do(req); err == nil {
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the provider says stop for 30s")
		resp.Body.Close()
	}
	require.EqualValues(t, 1, api.Stats().Requests)

	resp, err := b.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(10)))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, httpguard.ErrRateLimited, "b keeps to the pause the provider asked of the account")
	assert.EqualValues(t, 1, api.Stats().Requests, "nothing reached the provider during its pause")
}

// A BudgetStore with a Logger warns when its Redis may evict the keys
// holding the fleet's spend (an allkeys-* policy may take the key naming
// the newest window, and then the spend is forgotten unseen). It checked
// once, at its first reservation, and never again when that check could
// not reach Redis: a replica that started before its Redis did (a pod
// scheduled first, a Redis restarting) never warned.
func TestABudgetStoreWarnsOfEvictionWhenItsFirstCheckFoundNoRedis(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	var logs syncBuffer
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		ProbeInterval: 20 * time.Millisecond, OnFailover: events.record})
	srv.kill()
	_, err := s.Reserve(context.Background(), lifetime(1, 10), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, events.next(t).Down)

	srv.restart()
	client := srv.client(t)
	require.NoError(t, client.ConfigSet(context.Background(), "maxmemory", "1gb").Err())
	require.NoError(t, client.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err())
	require.False(t, events.next(t).Down)
	reserve(t, s, lifetime(2, 10), 100)
	assert.Contains(t, logs.String(), "maxmemory-policy=allkeys-lru", "Redis may evict the spend: %s", logs.String())
}

// A Redis that refuses INFO (a managed one may) is not asked again at every
// reservation.
func TestABudgetStoreChecksOnceARedisThatRefusesInfo(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	admin := srv.client(t)
	require.NoError(t, admin.Do(context.Background(), "ACL", "SETUSER", "noinfo", "on", ">secret", "~*", "&*", "+@all", "-info").Err())
	opts := testClientOptions(srv.Addr)
	opts.Username, opts.Password = "noinfo", "secret"
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	var infos atomic.Int64
	client.AddHook(countingHook{n: &infos, name: "info"})
	s := newStore(t, client, BudgetStoreConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for id := range uint64(3) {
		reserve(t, s, lifetime(id, 10), 100)
	}
	assert.EqualValues(t, 1, infos.Load(), "INFO asked once")
}

// A go-redis Ring is a UniversalClient, and NewBudgetStore took one. A
// Ring with more than one shard moves a key to another shard when the
// key's shard is down (and back when it is up again): the budget's keys
// then start afresh on the other shard, and the fleet spends its Limit
// again, unseen. (Its first wait for room also crashed the process: the
// store subscribed without a channel, which a Ring refuses by panicking.)
// A BudgetStore is refused a Ring, or keeps the spend.
func TestABudgetStoreOnARingNeverForgetsTheSpend(t *testing.T) {
	one, two := startRedis(t, redisOptions{}), startRedis(t, redisOptions{})
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"one": one.Addr, "two": two.Addr},
		ContextTimeoutEnabled: true, HeartbeatFrequency: 20 * time.Millisecond, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { ring.Close() })
	ctx := context.Background()
	onOne := redis.NewClient(testClientOptions(one.Addr))
	t.Cleanup(func() { onOne.Close() })
	var s *BudgetStore
	for i := 0; s == nil; i++ { // a budget whose keys the Ring puts on shard one
		store, err := NewBudgetStore(ring, BudgetStoreConfig{Name: fmt.Sprintf("ring-%d", i), ProbeInterval: 20 * time.Millisecond})
		if err != nil {
			return // refused: nothing can be forgotten
		}
		t.Cleanup(func() { store.Close() })
		if n, _ := onOne.Exists(ctx, store.keys.newest()).Result(); n == 0 {
			reserve(t, store, lifetime(1, 0), 100)
		}
		if n, _ := onOne.Exists(ctx, store.keys.newest()).Result(); n == 1 {
			s = store
		}
	}
	require.True(t, reserve(t, s, lifetime(2, 100), 100).OK)
	_, err := s.Settle(ctx, "lifetime", 2, 100) // the Limit, spent
	require.NoError(t, err)

	one.kill()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res, err := s.Reserve(ctx, lifetime(3, 100), 100)
		require.False(t, err == nil && res.OK, "the Limit was spent, and is admitted again: %+v", res)
	}
	one.restart()
}
