package httpguard

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sweepKeys is how many circuits or keys the sweep benchmarks sweep.
const sweepKeys = 100_000

// lookupStall runs lookup every 20µs or so until stop is closed and
// returns the longest single lookup: how long a request to a key already
// held waited for the sweep. It sleeps between lookups, as requests come
// apart, so as not to take a core from the sweep.
func lookupStall(lookup func(), stop <-chan struct{}) <-chan time.Duration {
	worst := make(chan time.Duration, 1)
	var started atomic.Bool
	go func() {
		var w time.Duration
		for {
			select {
			case <-stop:
				worst <- w
				return
			default:
			}
			t := time.Now()
			lookup()
			w = max(w, time.Since(t))
			started.Store(true)
			time.Sleep(20 * time.Microsecond)
		}
	}()
	for !started.Load() {
		time.Sleep(time.Microsecond)
	}
	return worst
}

// BenchmarkBreakerSweep sweeps 100k circuits: kept, all used within the
// RatioWindow, each with a call in its window; dropped, all unused for
// longer, each forgotten. stall-ns is the longest a lookup of another
// circuit, already held, waited during a sweep.
func BenchmarkBreakerSweep(b *testing.B) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	fill := func(br *Breaker, used time.Time) {
		for i := range sweepKeys {
			c := newCircuit("k"+strconv.Itoa(i), &br.cfg, used)
			c.window.add(used, false)
			br.circuits[c.key] = c
		}
	}
	for _, tc := range []struct {
		name string
		at   time.Duration // the sweep, after the circuits' use
		drop bool
	}{
		{"kept", DefaultRatioWindow / 2, false},
		{"dropped", 3 * DefaultRatioWindow, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br, err := NewBreaker(BreakerConfig{})
			if err != nil {
				b.Fatal(err)
			}
			now := t0.Add(tc.at)
			br.now = func() time.Time { return now }
			br.nextSweep = now.Add(time.Hour)
			br.crowd = 1 << 30
			other := br.circuit([]byte("other"), now)
			fill(br, t0)
			var stall time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if tc.drop && len(br.circuits) < sweepKeys {
					b.StopTimer()
					fill(br, t0)
					b.StartTimer()
				}
				stop := make(chan struct{})
				worst := lookupStall(func() { br.circuit([]byte("other"), now) }, stop)
				br.sweepIdle(now)
				close(stop)
				stall = max(stall, <-worst)
			}
			b.StopTimer()
			if got := len(br.circuits); tc.drop != (got < sweepKeys) || br.circuits["other"] != other {
				b.Fatalf("%d circuits after the sweep", got)
			}
			b.ReportMetric(float64(stall.Nanoseconds()), "stall-ns")
		})
	}
}

// BenchmarkLimiterSweep sweeps 100k keys: kept, all used within IdleTTL;
// dropped, all idle for longer, each forgotten. stall-ns is the longest
// a lookup of another key, already held, waited during a sweep.
func BenchmarkLimiterSweep(b *testing.B) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		at   time.Duration
		drop bool
	}{
		{"kept", DefaultIdleTTL / 2, false},
		{"dropped", 2 * DefaultIdleTTL, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var now time.Time
			var mu sync.Mutex
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			l, err := NewLimiter(LimitConfig{RequestsPerSecond: 10, Burst: 1, Store: newMemoryLimitStore(clock)})
			if err != nil {
				b.Fatal(err)
			}
			l.now = clock
			fill := func() {
				mu.Lock()
				now = t0
				mu.Unlock()
				for i := range sweepKeys {
					l.addKey(keyID{host: "h", model: strconv.Itoa(i)}, t0)
				}
				mu.Lock()
				now = t0.Add(tc.at)
				mu.Unlock()
			}
			fill()
			at := t0.Add(tc.at)
			next := at.Add(time.Hour)
			l.nextSweep.Store(&next)
			reqA, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
			reqB, _ := http.NewRequest(http.MethodGet, "http://b/", nil)
			a, bb := l.key(reqA, "m", false, at), l.key(reqB, "m", false, at)
			var stall time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if tc.drop && len(l.keys) < sweepKeys {
					b.StopTimer()
					fill()
					b.StartTimer()
				}
				stop := make(chan struct{})
				flip := false
				worst := lookupStall(func() { // two keys: past l.last, to the map
					flip = !flip
					if flip {
						l.key(reqA, "m", false, at)
					} else {
						l.key(reqB, "m", false, at)
					}
				}, stop)
				l.sweepIdle(at, l.cfg.IdleTTL)
				close(stop)
				stall = max(stall, <-worst)
			}
			b.StopTimer()
			if got := len(l.keys); tc.drop != (got < sweepKeys) || l.keys[a.id] != a || l.keys[bb.id] != bb {
				b.Fatalf("%d keys after the sweep", got)
			}
			b.ReportMetric(float64(stall.Nanoseconds()), "stall-ns")
		})
	}
}

// sweepIdle sweeps the circuits as a new one due to sweep does.
func (b *Breaker) sweepIdle(now time.Time) {
	b.mu.Lock()
	b.sweepApart(now, false)
	b.mu.Unlock()
}

// sweepIdle sweeps the keys as a new one due to sweep does.
func (l *Limiter) sweepIdle(now time.Time, idleFor time.Duration) {
	l.mu.Lock()
	l.sweepApart(now, idleFor)
	l.mu.Unlock()
}
