package redisguard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// While Redis is away, the Limiter still passes the fleet's rate, which
// the store scales to its local share: a 429 must cut the fleet's rate,
// not the share. A process that was sending at its full share (a quarter
// of 100/s) was accepted at what, for the fleet, is the full 100/s; cut
// from its 25/s, the Limiter would pass 17.5/s, which the store scales to
// 4.4/s, a sixteenth of what the process had, instead of 17.5/s.
func TestLimitStoreSlowsDownLocallyFromTheFleetsRateNotItsShare(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: time.Minute})
	ctx := context.Background()
	reqs := httpguard.BucketLimit{Rate: 100, Burst: 8}
	srv.kill()

	admitted := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		wait, _, err := s.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
		require.NoError(t, err)
		if wait == 0 {
			admitted++
			continue
		}
		time.Sleep(wait)
	}
	require.Greater(t, admitted, 5, "paced by the local share, at 25/s")
	ar, _, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, ar.Decreases)
	assert.Greater(t, ar.From, 60.0, "cut from the fleet's rate the share was accepted at, not from the share's")
	got, err := s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.InDelta(t, ar.From, got.From, 1e-9, "AdaptiveRate answers in the same units")
}

// A corrupted adaptive-rate hash (its "from" a string that Lua and Go
// read as NaN) must not lift the fleet's request limit: a Limiter that
// adopted a NaN rate admitted every request, and passed NaN to the next
// SlowDown, which recorded NaN again.
func TestLimiterOnACorruptedAdaptiveRateKeepsItsLimit(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	s := newLimitStore(t, client, LimitStoreConfig{})
	ctx := context.Background()
	require.NoError(t, client.HSet(ctx, s.keys.of("k").adapt, "n", 1, "from", "nan", "at", 0).Err())

	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	lim, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: -1, Store: s,
		Key: func(*http.Request, string) string { return "k" }})
	require.NoError(t, err)
	hc := &http.Client{Transport: lim.Wrap(api.Client().Transport)}
	defer hc.CloseIdleConnections()
	sent := 0
	for range 10 {
		resp, err := hc.Get(api.URL)
		if err == nil {
			resp.Body.Close()
			sent++
		}
	}
	assert.LessOrEqual(t, sent, 2, "1 request/s, burst 1: the rest are refused")
}

// A Redis restarted empty (or a hash expired) counts a key's decreases
// from 1 again. A Limiter still recovering from the old first decrease
// must adopt the new one with its next Take, as the other replicas do:
// it kept its old curve (99/s here, against the fleet's 14/s).
func TestLimiterAdoptsTheFleetsNewFirstDecreaseAfterRedisLostTheKey(t *testing.T) {
	client := startRedis(t, redisOptions{})
	rdb := client.client(t)
	a := newLimitStore(t, rdb, LimitStoreConfig{Name: "lost"})
	b := newLimitStore(t, rdb, LimitStoreConfig{Name: "lost"})
	ctx := context.Background()
	// The fleet's first decrease, from 100/s, 3s ago: the curve is at 99/s
	// and back at 100/s in 1.2s.
	now, err := rdb.Time(ctx).Result()
	require.NoError(t, err)
	at := float64(now.UnixMicro())/1e6 - 1483228800 - 3
	require.NoError(t, rdb.HSet(ctx, a.keys.of("k").adapt, "n", 1, "from", 100, "at", at).Err())

	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	var refusals []time.Duration
	lim, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 1, MaxWait: -1, Store: a,
		Key: func(*http.Request, string) string { return "k" },
		OnThrottle: func(e httpguard.ThrottleEvent) {
			if e.Rejected {
				refusals = append(refusals, e.Wait)
			}
		}})
	require.NoError(t, err)
	hc := &http.Client{Transport: lim.Wrap(api.Client().Transport)}
	defer hc.CloseIdleConnections()
	get := func() error {
		resp, err := hc.Get(api.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	require.NoError(t, get()) // adopts the decrease: 99/s

	require.NoError(t, rdb.FlushAll(ctx).Err())
	ar, _, err := b.SlowDown(ctx, "k", time.Millisecond, 20, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, ar.Decreases, "counted from 1 again")

	time.Sleep(15 * time.Millisecond) // a turn at 99/s
	require.NoError(t, get())         // reads the new decrease: 14/s
	require.Error(t, get())
	require.Len(t, refusals, 1)
	assert.Greater(t, refusals[0], 40*time.Millisecond, "the next turn at 14/s is 71ms away, not 10ms at 99/s")
}

// A decrease recorded in the future (a corrupted hash, or a server whose
// clock went back) is taken as now. Its TTL, counted from it, was past
// what PEXPIRE takes: every count failed the script, the store went back
// and forth between Redis and its local share, and the hash, never given
// a TTL, stayed.
func TestLimitStoreOnAnAdaptiveRateFromTheFutureStaysOnRedis(t *testing.T) {
	rdb := startRedis(t, redisOptions{}).client(t)
	events := make(failovers, 100)
	s := newLimitStore(t, rdb, LimitStoreConfig{OnFailover: events.record, ProbeInterval: time.Millisecond})
	ctx := context.Background()
	key := s.keys.of("k").adapt
	require.NoError(t, rdb.HSet(ctx, key, "n", 1, "from", 100, "at", "1e300").Err())
	reqs := httpguard.BucketLimit{Rate: 1000, Burst: 1000}
	for range 3 {
		_, _, err := s.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
		require.NoError(t, err)
		time.Sleep(admitCountEvery + 5*time.Millisecond) // the next Take counts this one
	}
	ar, _, err := s.SlowDown(ctx, "k", time.Minute, 100, 0)
	require.NoError(t, err)
	assert.Zero(t, len(events), "Redis answered every call")
	assert.False(t, s.link.isDown())
	assert.EqualValues(t, 1, ar.Decreases, "a 429 to a request sent before the decrease is in its round")
	assert.Less(t, ar.Since, time.Second, "the decrease is taken as recent, not as in the future")
	ttl, err := rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "the hash expires")
	assert.LessOrEqual(t, ttl, 601*time.Second)
}
