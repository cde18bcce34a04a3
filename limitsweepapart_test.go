package httpguard

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Over more than a chunk of keys, a sweep finds the idle keys under the
// read lock and drops them under the write lock a chunk at a time, so that
// requests to the keys it keeps do not wait for the whole sweep. A key
// found idle, then used before the sweep drops it, is kept: it is checked
// again. A request to a key held goes on while the sweep runs; the keys
// nobody used go.
func TestLimiterSweepKeepsAKeyUsedAfterItWasFound(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	used := limKey(t, l, "h", "used")
	for i := range sweepChunk + 100 {
		limKey(t, l, "h", "idle-"+strconv.Itoa(i))
	}
	idle := limKey(t, l, "h", "idle-0")
	clk.Advance(l.cfg.IdleTTL + time.Second)

	swept := 0
	l.found = func() {
		swept++
		ks := limKey(t, l, "h", "used") // between the passes: not waiting for the sweep
		require.Same(t, used, ks)
		var p place
		_, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
	}
	fresh := limKey(t, l, "h", "new")
	require.Equal(t, 1, swept)

	assert.Same(t, used, limKey(t, l, "h", "used"), "the key used after the sweep found it is kept")
	assert.False(t, used.dropped.Load())
	assert.True(t, idle.dropped.Load(), "the keys nobody used are dropped")
	l.mu.RLock()
	assert.Len(t, l.keys, 2)
	assert.Same(t, fresh, l.keys[fresh.id])
	l.mu.RUnlock()
}
