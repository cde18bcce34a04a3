package httpguard

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// This file is the Breaker's state machine: one circuit per key, with its
// three states and one step per state, and the rolling window of outcomes
// its failure ratio is measured over. breaker.go is the layer around it.
//
// Why not github.com/sony/gobreaker/v2 (v2.4.0): it reads time.Now itself,
// so trip and recovery timings cannot be tested with an injected clock;
// with a rolling window (BucketPeriod) its run of consecutive failures
// resets as buckets roll, so a steady run of failures spread over time
// never trips it; and a half-open probe whose outcome never comes (a
// stream the caller abandons) keeps it half-open and refusing for good.
// Each was shown with v2.4.0 before this file was written.

// CircuitState is the state of one of a Breaker's circuits. The zero value
// is CircuitClosed.
type CircuitState uint8

const (
	// CircuitClosed lets every request through and counts their outcomes.
	CircuitClosed CircuitState = iota
	// CircuitOpen refuses every request with ErrCircuitOpen until its
	// cool-down ends.
	CircuitOpen
	// CircuitHalfOpen lets a few probes through: it closes when as many
	// succeed as BreakerConfig.Probes, and opens again when as many fail
	// first.
	CircuitHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s CircuitState) String() string {
	switch s {
	case CircuitClosed:
		return "closed"
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("CircuitState(%d)", int(s))
}

// outcome is what an attempt says of the provider.
type outcome uint8

const (
	outcomeIgnored outcome = iota // nothing: refused below, cancelled by the caller, a 429
	outcomeSuccess
	outcomeFailure
)

// windowBuckets is how many buckets the rolling window has: it forgets
// outcomes a tenth of a Window at a time.
const windowBuckets = 10

// circuit is the state of one key. Its fields are guarded by mu.
type circuit struct {
	key string

	mu    sync.Mutex
	state CircuitState
	// gen changes with every state change: an outcome reported for an
	// attempt let through in another generation is not counted.
	gen uint64
	// until is, when open, the end of the cool-down; when half-open, when
	// the probes out, the last sent a cool-down ago, are given up for lost
	// and others may go.
	until  time.Time
	probes int    // half-open: probes out
	passed int    // half-open: probes that succeeded
	failed int    // half-open: probes that failed
	round  uint32 // half-open: changes when the probes out are given up for lost
	run    int    // consecutive failures
	window rollingWindow

	lastUsed       time.Time
	opens, refused int64
	// dropped is set when a sweep forgets the circuit. A request that
	// found it just before goes, as it would through the key's next
	// circuit, and the outcomes of the attempts it let through are not
	// counted: no change of a circuit no longer in use is announced, nor
	// does it refuse a retry the next circuit would let through.
	dropped bool

	// events are the state changes not yet announced, in the order they
	// happened; announcing is set while a goroutine announces them (see
	// Breaker.announce).
	events     []BreakerEvent
	announcing bool
}

func newCircuit(key string, cfg *BreakerConfig, now time.Time) *circuit {
	c := &circuit{key: key, lastUsed: now}
	c.window.begin(cfg.RatioWindow, now)
	return c
}

// pass is an attempt a circuit let through: the generation and the round
// of probes to report its outcome in.
type pass struct {
	gen   uint64
	round uint32
}

// allow decides whether an attempt may go now, and returns the pass to
// report its outcome with, and whether the state changed.
func (c *circuit) allow(cfg *BreakerConfig, now time.Time) (p pass, ok, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return pass{c.gen, c.round}, true, false
	}
	c.lastUsed = now
	if c.state == CircuitOpen && !now.Before(c.until) {
		changed = c.become(CircuitHalfOpen, cfg, now, "cool-down over")
	}
	switch c.state {
	case CircuitClosed:
		ok = true
	case CircuitHalfOpen:
		ok = c.allowProbe(cfg, now)
	}
	if !ok {
		c.refused++
	}
	return pass{c.gen, c.round}, ok, changed
}

// allowProbe lets a probe out while fewer than cfg.Probes are. Probes that
// have not answered within a cool-down (a body never closed) are given up
// for lost, so that a circuit never stays half-open for good: a new round
// starts, whose slots their outcomes, when they come, do not give back
// (their successes and failures still count).
func (c *circuit) allowProbe(cfg *BreakerConfig, now time.Time) bool {
	if c.probes >= cfg.Probes {
		if now.Before(c.until) {
			return false
		}
		c.probes = 0
		c.round++
	}
	c.probes++
	c.until = now.Add(cfg.CoolDown)
	return true
}

// report counts the outcome of an attempt let through with p, and reports
// whether the state changed.
func (c *circuit) report(cfg *BreakerConfig, p pass, o outcome, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.gen != c.gen || c.dropped {
		return false
	}
	switch c.state {
	case CircuitClosed:
		return c.reportClosed(cfg, o, now)
	case CircuitHalfOpen:
		return c.reportProbe(cfg, p, o, now)
	}
	return false
}

func (c *circuit) reportClosed(cfg *BreakerConfig, o outcome, now time.Time) bool {
	switch o {
	case outcomeSuccess:
		c.run = 0
		c.window.add(now, false)
	case outcomeFailure:
		c.run++
		c.window.add(now, true)
		if reason := c.tripReason(cfg, now); reason != "" {
			return c.become(CircuitOpen, cfg, now, reason)
		}
	}
	return false
}

func (c *circuit) reportProbe(cfg *BreakerConfig, p pass, o outcome, now time.Time) bool {
	switch o {
	case outcomeIgnored: // says nothing: the slot goes to another probe
		if p.round == c.round { // a lost probe's slot went with it
			c.probes = max(c.probes-1, 0)
		}
	case outcomeFailure:
		// One failed probe does not reopen the circuit: a provider failing
		// one request in five, alive, would then stay open half the time.
		if c.failed++; c.failed >= cfg.Probes {
			return c.become(CircuitOpen, cfg, now, fmt.Sprintf("%d probes failed", c.failed))
		}
		if p.round == c.round { // its slot goes to another probe
			c.probes = max(c.probes-1, 0)
		}
	case outcomeSuccess:
		c.passed++
		if c.passed >= cfg.Probes {
			return c.become(CircuitClosed, cfg, now, fmt.Sprintf("%d probes succeeded", c.passed))
		}
	}
	return false
}

// tripReason says why the circuit must open, or "" when it need not.
func (c *circuit) tripReason(cfg *BreakerConfig, now time.Time) string {
	calls, failures := c.window.sum(now)
	if cfg.ConsecutiveFailures > 0 && c.run >= runToTrip(cfg, calls, failures, c.run) {
		return fmt.Sprintf("%d consecutive failures", c.run)
	}
	if cfg.MinCalls > 0 && calls >= cfg.MinCalls && float64(failures) >= cfg.FailureRatio*float64(calls) {
		return fmt.Sprintf("%d of the last %d calls failed", failures, calls)
	}
	return ""
}

// healthyFailureRate is the failure rate ConsecutiveFailures is meant for:
// a run of 5 is then a one-in-3-million event.
const healthyFailureRate = 0.05

// runToTrip is the run of failures that opens the circuit, given the
// window's calls and failures, run of them the current run. A run is a
// sign of an outage when it is unlikely for the provider as it was before
// the run: ConsecutiveFailures for a healthy one, longer for one already
// failing often, so that a run is as unlikely for it as
// ConsecutiveFailures are for a healthy one (at 20% failures a run of 10).
// A provider is far more often degraded than down: with a fixed run, one
// failing a request in five opens its circuit every few thousand
// attempts. The rate is judged on MinCalls calls at least
// (DefaultMinCalls when the ratio rule is off: the window counts them
// still), and never delays the ratio rule.
func runToTrip(cfg *BreakerConfig, calls, failures, run int) int {
	n := cfg.ConsecutiveFailures
	calls, failures = calls-run, failures-run
	least := cfg.MinCalls
	if least <= 0 {
		least = DefaultMinCalls
	}
	if calls < least || failures <= 0 {
		return n
	}
	p := float64(failures) / float64(calls)
	if p <= healthyFailureRate {
		return n
	}
	p = min(p, 0.9)
	// In floating point: for a huge n, 30*n and the run overflow an int,
	// which would open the circuit at every failure.
	trip := min(math.Ceil(float64(n)*math.Log(healthyFailureRate)/math.Log(p)), 30*float64(n))
	if trip >= float64(math.MaxInt) {
		return math.MaxInt
	}
	return int(trip)
}

// become moves the circuit to state s, starting a new generation, and
// queues the change to be announced. It returns true.
func (c *circuit) become(s CircuitState, cfg *BreakerConfig, now time.Time, reason string) bool {
	c.events = append(c.events, BreakerEvent{Key: c.key, From: c.state, To: s, Reason: reason, Time: now})
	c.state = s
	c.gen++
	c.probes, c.passed, c.failed = 0, 0, 0
	switch s {
	case CircuitOpen:
		c.opens++
		c.until = now.Add(cfg.CoolDown)
	case CircuitHalfOpen:
		c.until = now.Add(cfg.CoolDown)
	case CircuitClosed:
		c.run = 0
		c.window.begin(cfg.RatioWindow, now)
	}
	return true
}

// refuses reports whether the circuit refuses requests at now: it is open
// and its cool-down has not ended.
func (c *circuit) refuses(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == CircuitOpen && now.Before(c.until)
}

// stats returns what Breaker.Stats reports of the circuit.
func (c *circuit) stats(now time.Time) BreakerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := BreakerStats{Key: c.key, State: c.state, ConsecutiveFailures: c.run, Opens: c.opens, Refused: c.refused}
	s.Calls, s.Failures = c.window.sum(now)
	if c.state == CircuitOpen {
		s.OpenUntil = c.until
	}
	return s
}

// idle reports whether the circuit is as a new one would be, and unused
// since before: it can be dropped. Its counts of opens and refusals go
// with it. A run of failures makes it differ from a new one only when a
// run can open it (cfg.ConsecutiveFailures > 0).
func (c *circuit) idle(cfg *BreakerConfig, now, before time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleLocked(cfg, now, before)
}

// The window is summed last: most circuits a sweep passes over were used
// lately, or are not closed.
func (c *circuit) idleLocked(cfg *BreakerConfig, now, before time.Time) bool {
	if !c.lastUsed.Before(before) || c.state != CircuitClosed || c.run != 0 && cfg.ConsecutiveFailures >= 0 {
		return false
	}
	calls, _ := c.window.sum(now)
	return calls == 0
}

// stale reports whether the circuit, unused since before, refuses nothing
// at now: closed (whatever its run of failures and its window hold), or
// open or half-open past until (its cool-down over, its probes given up
// for lost). A sweep of crowded circuits drops it: a run of failures
// forgotten only delays an opening, while an open circuit in its
// cool-down, or a half-open one with its probes out, keeps refusing.
// c.mu is held.
func (c *circuit) stale(now, before time.Time) bool {
	return c.lastUsed.Before(before) && (c.state == CircuitClosed || !now.Before(c.until))
}

// droppable reports whether drop would forget the circuit now, without
// marking it.
func (c *circuit) droppable(cfg *BreakerConfig, now, before time.Time, crowded bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropsLocked(cfg, now, before, crowded)
}

// drop reports whether a sweep at now forgets the circuit, unused since
// before: when it is idle, or crowded and stale; it is then marked
// dropped.
func (c *circuit) drop(cfg *BreakerConfig, now, before time.Time, crowded bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropped = c.dropsLocked(cfg, now, before, crowded)
	return c.dropped
}

// dropsLocked is what droppable and drop report. A circuit used since
// before is kept, whatever else it holds: both idleLocked and stale check
// that first. c.mu is held.
func (c *circuit) dropsLocked(cfg *BreakerConfig, now, before time.Time, crowded bool) bool {
	return c.idleLocked(cfg, now, before) || crowded && c.stale(now, before)
}

// rollingWindow counts outcomes over the last windowBuckets bucket
// lengths: a bucket older than that is reused, its counts forgotten. Start
// it with begin; the zero value counts nothing.
type rollingWindow struct {
	start   time.Time     // slots count bucket lengths from here
	length  time.Duration // a bucket's length
	buckets [windowBuckets]struct {
		slot            int64
		calls, failures int
	}
}

func (w *rollingWindow) slot(now time.Time) int64 {
	return max(int64(now.Sub(w.start)/w.length), 0)
}

func (w *rollingWindow) add(now time.Time, failed bool) {
	if w.length == 0 {
		return
	}
	s := w.slot(now)
	b := &w.buckets[s%windowBuckets]
	if b.slot != s {
		b.slot, b.calls, b.failures = s, 0, 0
	}
	b.calls++
	if failed {
		b.failures++
	}
}

// begin starts an empty window of the given length at now.
func (w *rollingWindow) begin(length time.Duration, now time.Time) {
	*w = rollingWindow{start: now, length: max(length/windowBuckets, 1)}
}

// sum returns the calls and failures counted in the window that ends now.
func (w *rollingWindow) sum(now time.Time) (calls, failures int) {
	if w.length == 0 {
		return 0, 0
	}
	s := w.slot(now)
	for _, b := range w.buckets {
		if b.slot <= s && b.slot > s-windowBuckets {
			calls += b.calls
			failures += b.failures
		}
	}
	return calls, failures
}
