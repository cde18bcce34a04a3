package httpguard

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A shared MemoryLimitStore cuts a key's rate once per round of the fleet,
// from the rate the fleet's requests were accepted at.
func TestMemoryLimitStoreSlowsTheFleetDownOncePerRound(t *testing.T) {
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	ctx := context.Background()
	reqs := BucketLimit{Rate: 100, Burst: 100}
	// 30 requests admitted over a second, from any process.
	for range 30 {
		clk.Advance(time.Second / 30)
		wait, _, err := s.Take(ctx, "k", reqs, BucketLimit{}, 0)
		require.NoError(t, err)
		require.Zero(t, wait)
	}
	ar, err := s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.Zero(t, ar, "no decrease yet")

	ar, _, err = s.SlowDown(ctx, "k", 10*time.Millisecond, 100, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.InDelta(t, 30, ar.From, 1.5, "from the about 30/s accepted, not from the 100/s in force")

	// Another process's 429 to a request sent before the cut: same round.
	clk.Advance(5 * time.Millisecond)
	ar, _, err = s.SlowDown(ctx, "k", 10*time.Millisecond, 20, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.Equal(t, 5*time.Millisecond, ar.Since)

	// A 429 to a request sent after it: a new round, from the rate in force.
	ar, _, err = s.SlowDown(ctx, "k", time.Millisecond, 20, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 2, ar.Decreases)
	assert.InDelta(t, 20, ar.From, 1e-9)
	assert.Zero(t, ar.Since)
}

// Limiters sharing a MemoryLimitStore adopt each other's decreases: one
// process's 429 lowers the rate every process passes to the shared bucket.
func TestLimitersSharingAStoreAdoptEachOthersDecrease(t *testing.T) {
	clk := newFakeClock(block)
	store := newMemoryLimitStore(clk.Now)
	a := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 5, Store: store}, clk)
	b := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 5, Store: store}, clk)
	ka, kb := limKey(t, a, "h", "m"), limKey(t, b, "h", "m")
	tooMany := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}
	sent := clk.Now()
	clk.Advance(time.Millisecond)

	a.observe(bareRequest, nil, ka, 0, tooMany, sent, noEnd)
	require.InDelta(t, 70, ka.rate, 1e-9)
	// b's request, sent with a's, met the same round: no second cut.
	b.observe(bareRequest, nil, kb, 0, tooMany, sent, noEnd)
	assert.InDelta(t, 70, kb.rate, 0.1, "b adopted a's decrease")
	assert.EqualValues(t, 1, a.Stats().SlowDowns)

	var p place
	wait, _, err := b.turn(context.Background(), kb, &p, 0, clk.Now(), anyWait)
	require.NoError(t, err)
	require.Zero(t, wait)
	ks := store.keys["h m"]
	require.NotNil(t, ks)
	assert.EqualValues(t, 1, ks.fleet.decreases)
}

// A store that dropped a key counts its decreases from 1 again: a Limiter
// that saw the old first decrease still adopts the new one.
func TestALimiterAdoptsADecreaseAfterTheStoreDroppedTheKey(t *testing.T) {
	clk := newFakeClock(block)
	store := newMemoryLimitStore(clk.Now)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 5, Store: store}, clk)
	ks := limKey(t, l, "h", "m")
	ctx := context.Background()
	takeTurn := func() {
		t.Helper()
		var p place
		wait, _, err := l.turn(ctx, ks, &p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
		require.Zero(t, wait)
	}
	_, _, err := store.SlowDown(ctx, "h m", time.Millisecond, 100, 0)
	require.NoError(t, err)
	takeTurn()
	require.InDelta(t, 70, ks.rate, 0.1, "adopted the fleet's decrease")

	clk.Advance(fleetRateTTL + time.Minute) // recovered here; dropped by the store
	require.Zero(t, store.Len())
	ar, _, err := store.SlowDown(ctx, "h m", time.Millisecond, 100, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, ar.Decreases, "counted from 1 again")
	takeTurn()
	assert.InDelta(t, 70, ks.rate, 0.1, "adopted the new decrease")
}

// The fleet's 429s are judged on all its requests, in the store: a
// replica that sent 2 of the fleet's 102 requests in the last second, and
// had one of them answered 429, sees half its own refused, but the fleet
// 1 in 102, a degraded provider's share, which cuts no rate. Judged on
// its own requests, that replica's unlucky second cut every replica's
// rate.
func TestAReplicasFew429sAreJudgedOnTheFleetsRequests(t *testing.T) {
	clk := newFakeClock(block)
	store := newMemoryLimitStore(clk.Now)
	busy := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1000, Store: store}, clk)
	quiet := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1000, Store: store}, clk)
	kb, kq := limKey(t, busy, "h", "m"), limKey(t, quiet, "h", "m")
	takeTurns(t, busy, kb, clk, 100)
	sent := clk.Now()
	takeTurns(t, quiet, kq, clk, 2)
	tooMany := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}

	quiet.observe(bareRequest, nil, kq, 0, tooMany, sent, noEnd)
	assert.Zero(t, quiet.Stats().SlowDowns, "1 429 of the fleet's 102 requests")
	assert.InDelta(t, 1000, kq.rate, 1e-9)
	ar, err := store.AdaptiveRate(context.Background(), "h m")
	require.NoError(t, err)
	assert.Zero(t, ar, "no decrease for the fleet")
	assert.Zero(t, quiet.Stats().ServerPauses, "a degraded provider's 429 pauses only its request")
}
