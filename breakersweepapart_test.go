package httpguard

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A sweep finds the circuits to forget under the read lock and forgets
// them under the write lock a chunk at a time, so that requests to the
// circuits it keeps do not wait for the whole sweep. A circuit found
// stale, then used by a request before the sweep forgets it, is kept, run
// and all, with the request counted: it is checked again. A circuit nobody
// used goes.
func TestBreakerSweepKeepsACircuitUsedAfterItWasFound(t *testing.T) {
	f := newBreakerFlood(t, BreakerConfig{RatioWindow: time.Second, CoolDown: time.Second, ConsecutiveFailures: 5})
	require.NoError(t, f.call(t, "used"))
	require.NoError(t, f.call(t, "unused"))
	used, unused := f.circuit("used"), f.circuit("unused")
	f.b.mu.Lock()
	f.b.crowd = 2 // the next new circuit sweeps the crowded ones
	f.b.nextSweep = f.clock.Now().Add(time.Hour)
	f.b.mu.Unlock()
	f.clock.Advance(2 * time.Second)

	swept := 0
	f.b.found = func() {
		swept++
		require.NoError(t, f.call(t, "used")) // between the passes
	}
	require.NoError(t, f.call(t, "new"))
	require.Equal(t, 1, swept)

	assert.Same(t, used, f.circuit("used"), "the circuit used after the sweep found it is kept")
	assert.False(t, used.dropped)
	s, ok := f.b.StatsOf("api.test used")
	require.True(t, ok)
	assert.Equal(t, 2, s.ConsecutiveFailures, "its run kept, the request between the passes counted")
	assert.Equal(t, 1, s.Calls)
	assert.Nil(t, f.circuit("unused"), "the circuit nobody used is forgotten")
	assert.True(t, unused.dropped)
	assert.NotNil(t, f.circuit("new"))
}
