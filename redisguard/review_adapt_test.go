package redisguard

import (
	"context"
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
