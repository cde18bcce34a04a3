package httpguard

import (
	"sync/atomic"
	"time"
)

// clockAnchor is a reading of time.Now that readClock counts from, and
// replaces with a fresh one once it is anchorAge old.
var clockAnchor atomic.Pointer[time.Time]

// anchorAge is how long readClock counts from one reading of the wall
// clock: a step of the system's wall clock shows in its readings at most
// that late.
const anchorAge = time.Second

func init() {
	t := time.Now()
	clockAnchor.Store(&t)
}

// readClock is time.Now at the cost of one reading of the monotonic clock
// instead of two (time.Now reads the wall clock too): on virtual machines
// each reading can be a vDSO call of ~45 ns, and the Limiter reads the
// clock once for a turn taken at once (again when the answer used more
// tokens than it estimated, and while a request waits), the Budget with a
// window and the Breaker once.
// Its monotonic reading is exact, so durations between its readings are
// too; its wall reading is the anchor's advanced by the monotonic time
// since, which misses a step of the wall clock (a manual set, an NTP
// step, or the time a suspended machine slept, when the monotonic clock
// stops) for up to anchorAge. It is safe for concurrent use.
func readClock() time.Time {
	a := clockAnchor.Load()
	if d := time.Since(*a); d >= 0 && d < anchorAge {
		return a.Add(d)
	}
	t := time.Now()
	clockAnchor.Store(&t)
	return t
}
