package httpguard

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadClockKeepsTimeNowsReadings(t *testing.T) {
	compared := 0
	for range 1000 {
		before := time.Now()
		anchor := clockAnchor.Load()
		got := readClock()
		after := time.Now()
		// Monotonic readings: got lies between the two.
		require.False(t, got.Before(before), "readClock %v before time.Now %v", got, before)
		require.False(t, got.After(after), "readClock %v after time.Now %v", got, after)
		// Wall readings: the anchor's, advanced by the monotonic time
		// since. Compared with the anchor, not with time.Now: the wall
		// clock may be stepped or slewed in between (a CI machine's was
		// stepped by a millisecond within one second), which readClock
		// shows only once it takes a fresh anchor.
		if clockAnchor.Load() == anchor {
			require.Equal(t, anchor.Round(0).Add(got.Sub(*anchor)), got.Round(0))
			compared++
		}
	}
	// The anchor is replaced once a second: nearly every reading kept it.
	assert.Greater(t, compared, 900, "readClock replaced its anchor at %d of 1000 readings", 1000-compared)
}

func TestReadClockTakesAFreshWallReadingOnceItsAnchorIsOld(t *testing.T) {
	saved := clockAnchor.Load()
	t.Cleanup(func() { clockAnchor.Store(saved) })

	anchor := time.Now().Add(-anchorAge / 2)
	clockAnchor.Store(&anchor)

	got := readClock()
	assert.Same(t, &anchor, clockAnchor.Load(), "an anchor younger than anchorAge is kept")
	assert.InDelta(t, float64(anchorAge/2), float64(got.Sub(anchor)), float64(100*time.Millisecond))

	old := time.Now().Add(-anchorAge)
	clockAnchor.Store(&old)
	got = readClock()
	// By a fresh reading: the one returned, unless a goroutine left by
	// another test read the clock as well.
	assert.NotSame(t, &old, clockAnchor.Load(), "an anchor anchorAge old is replaced")
	assert.InDelta(t, 0, float64(clockAnchor.Load().Sub(got)), float64(100*time.Millisecond))
	assert.InDelta(t, 0, float64(time.Since(got)), float64(100*time.Millisecond))
}
