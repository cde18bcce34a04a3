package httpguard

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A tenant of a gateway names the model, so it names the Limiter's keys:
// a flood of made-up model names, each used once, made a key each that
// the Limiter kept for IdleTTL (10 minutes): at 1,000 names a second,
// 600,000 keys of some 700 bytes each, plus twice each name (up to the
// body's 4 MB). Keys that pile up are now swept before IdleTTL, of those
// idle for a second that hold nothing to remember, so the flood keeps
// about two seconds' worth; a key that holds a pause is kept.
func TestLimiterBoundsTheKeysOfAFloodOfModelNames(t *testing.T) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 100, Burst: 10, MaxPause: 5 * time.Minute})
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep // its own store, on this clock
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", nil)
	require.NoError(t, err)
	request := func(model string) *keyState {
		now := clk.Now()
		ks := l.key(req, model, false, now)
		l.count(ks)
		_, ok := l.takeFast(ks, 0, now)
		require.True(t, ok, "a full bucket: taken at once")
		return ks
	}
	paused := request("real-model")
	l.pause(context.Background(), paused, clk.Now(), clk.Now().Add(5*time.Minute))

	const flood, perSecond = 20_000, 1_000
	most := 0
	for i := range flood {
		request("made-up-" + strconv.Itoa(i))
		clk.Advance(time.Second / perSecond)
		l.mu.RLock()
		most = max(most, len(l.keys))
		l.mu.RUnlock()
	}

	assert.LessOrEqual(t, most, 2*perSecond+crowdedKeys/8, "keys held at once (%d made)", flood)
	assert.LessOrEqual(t, l.own.Len(), 2*perSecond+crowdedKeys/8, "states the store holds")
	assert.EqualValues(t, flood+1, l.Stats().Requests, "the swept keys' requests still count")
	again := limKey(t, l, "api.test", "real-model")
	assert.Same(t, paused, again, "the paused key is kept")
	var p place
	wait, by, err := l.turn(context.Background(), again, &p, 0, clk.Now(), anyWait)
	require.NoError(t, err)
	assert.Equal(t, ThrottlePaused, by)
	assert.Greater(t, wait, 4*time.Minute)
}
