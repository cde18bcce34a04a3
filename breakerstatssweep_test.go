package httpguard

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Stats and StatsOf may run while a sweep forgets circuits a chunk at a
// time, the Breaker's lock let go between the chunks: they see each
// circuit whole, either still there or forgotten, never a torn count, and
// a circuit in use is listed throughout, its counts never going back. Run
// with -race.
func TestBreakerStatsDuringASweepSeeEachCircuitWhole(t *testing.T) {
	f := newBreakerFlood(t, BreakerConfig{RatioWindow: time.Second, CoolDown: time.Second, ConsecutiveFailures: 1000})
	const stale = 3 * sweepChunk // several chunks, each a run of one failure: kept by an idle sweep, forgotten by a crowded one
	for i := range stale {
		require.NoError(t, f.call(t, "stale-"+strconv.Itoa(i)))
	}
	f.clock.Advance(2 * time.Second) // the stale circuits are unused for a RatioWindow
	require.NoError(t, f.call(t, "hot"))

	var stop atomic.Bool
	var wg sync.WaitGroup
	// check checks a listing; lastRun is the hot circuit's run in the
	// listing before, of the same goroutine.
	check := func(list []BreakerStats, lastRun *int) {
		assert.True(t, slices.IsSortedFunc(list, func(x, y BreakerStats) int {
			if x.Key == y.Key {
				t.Errorf("%s listed twice", x.Key)
			}
			return cmpString(x.Key, y.Key)
		}))
		hot := false
		for _, s := range list {
			assert.GreaterOrEqual(t, s.Calls, s.Failures, s.Key)
			if s.Key == "api.test hot" {
				hot = true
				assert.GreaterOrEqual(t, s.ConsecutiveFailures, *lastRun, "the hot circuit's run never goes back")
				*lastRun = s.ConsecutiveFailures
			} else {
				assert.LessOrEqual(t, s.ConsecutiveFailures, 1, s.Key) // 0 while its first call is out
			}
		}
		assert.True(t, hot, "the circuit in use is listed")
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		run := 0
		for !stop.Load() {
			check(f.b.Stats(), &run)
		}
	}()
	go func() {
		defer wg.Done()
		run := 0
		for !stop.Load() {
			s, ok := f.b.StatsOf("api.test hot")
			assert.True(t, ok)
			assert.GreaterOrEqual(t, s.ConsecutiveFailures, run)
			run = s.ConsecutiveFailures
		}
	}()
	passes, run := 0, 0
	f.b.found = func() {
		passes++
		list := f.b.Stats() // between the passes: everything still there
		check(list, &run)
		assert.Greater(t, len(list), stale/4, "the stale circuits are listed until forgotten")
	}
	const rounds = 8
	for round := range rounds {
		f.b.mu.Lock()
		f.b.crowd = 2 // the next new circuit sweeps the crowded ones
		f.b.nextSweep = f.clock.Now().Add(time.Hour)
		f.b.mu.Unlock()
		require.NoError(t, f.call(t, "hot"))
		require.NoError(t, f.call(t, "new-"+strconv.Itoa(round)))
		for i := range stale / 4 { // stale again, for the next round
			require.NoError(t, f.call(t, "stale-"+strconv.Itoa(round)+"-"+strconv.Itoa(i)))
		}
		f.clock.Advance(2 * time.Second)
	}
	stop.Store(true)
	wg.Wait()
	assert.Equal(t, rounds, passes)
	list := f.b.Stats()
	check(list, &run)
	assert.Equal(t, 1+rounds, list[0].ConsecutiveFailures, "the hot circuit counted every call: %v", list[0])
	assert.Len(t, list, 1+1+stale/4, "hot, the last new circuit and the last stale ones")
}

func cmpString(x, y string) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
