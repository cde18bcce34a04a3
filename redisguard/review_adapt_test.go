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
	ar, err := s.SlowDown(ctx, "k", time.Millisecond, 100)
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
