package httpguard

import (
	"fmt"
	"math"
	"sync/atomic"
)

// RetryBudget bounds the retries of all requests that share a Retrier by how
// likely a retry is to succeed. The Retrier keeps s, the success rate of the
// last ten or so attempts (an attempt succeeds unless the Classifier
// finds it worth retrying; a request's first attempt whose connection
// ended before any byte of an answer, as when a server's idle timeout
// closes a kept-alive connection just as it goes out, counts neither
// way), and each request it sends earns MaxRatio·s
// retries, never fewer than MinRatio; each retry spends one. Up to Burst
// earned retries are saved, and a fresh Retrier starts with Burst.
//
// While retries mostly succeed, every failure gets its retries; as they stop
// succeeding, retries shrink with their chance of success, so that a full
// outage costs 1+MinRatio requests per request; when the provider recovers,
// its successes earn the retries back. The package documentation has the
// reasoning and the numbers.
//
// The zero value means the defaults: MaxRatio 1, MinRatio 0.01, Burst 10. A
// RetryBudget is configuration; the running count lives in the Retrier,
// which is safe for concurrent use.
type RetryBudget struct {
	// MaxRatio is how many retries a request earns when every recent
	// attempt succeeded. 0 means 1: at most one retry per request, on
	// average, however retries fare.
	MaxRatio float64
	// MinRatio is the fewest retries a request earns, however many recent
	// attempts failed: what a full outage costs, in extra requests per
	// request. 0 means 0.01. It must not exceed MaxRatio.
	MinRatio float64
	// Burst is how many earned retries are saved for later, and how many
	// a fresh Retrier starts with. 0 means 10, so that a lone request gets
	// all its retries.
	Burst int
	// Disabled turns the budget off: each request gets all its retries
	// whatever happens to the others. false, the zero value, means on.
	Disabled bool
}

const (
	defaultMaxRatio = 1
	defaultMinRatio = 0.01
	defaultBurst    = 10
	maxRetryRatio   = 1000 // bounds MaxRatio and MinRatio, so the arithmetic below cannot overflow
	maxRetryBurst   = 1 << 20

	// successWindow is how many recent attempts the success rate weighs:
	// each outcome moves it 1/successWindow of the way to 0 or 1. Ten reacts
	// to an outage within a dozen attempts and still reads 20% random
	// faults as s ≈ 0.8 ± 0.1.
	successWindow = 10
	// unit is one retry, or a success rate of 1, in the integers below.
	unit = 1_000_000
)

func (b RetryBudget) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"MaxRatio", b.MaxRatio}, {"MinRatio", b.MinRatio}} {
		if !(f.v >= 0 && f.v <= maxRetryRatio) {
			return fmt.Errorf("httpguard: retry: RetryBudget.%s must be a number in [0, %d], got %v", f.name, maxRetryRatio, f.v)
		}
	}
	if b.Burst < 0 || b.Burst > maxRetryBurst {
		return fmt.Errorf("httpguard: retry: RetryBudget.Burst must be in [0, %d], got %d", maxRetryBurst, b.Burst)
	}
	if d := b.withDefaults(); d.MinRatio > d.MaxRatio {
		return fmt.Errorf("httpguard: retry: RetryBudget.MinRatio (%v) must not exceed MaxRatio (%v)", d.MinRatio, d.MaxRatio)
	}
	return nil
}

func (b RetryBudget) withDefaults() RetryBudget {
	if b.MaxRatio == 0 {
		b.MaxRatio = defaultMaxRatio
	}
	if b.MinRatio == 0 {
		b.MinRatio = defaultMinRatio
	}
	if b.Burst == 0 {
		b.Burst = defaultBurst
	}
	return b
}

// retryBudget is the running state of a RetryBudget, lock-free and safe for
// concurrent use; a nil *retryBudget allows every retry. Its hot path, a
// request that succeeds at once while all is well, only loads two words.
type retryBudget struct {
	success atomic.Int64 // recent success rate of attempts, in millionths
	tokens  atomic.Int64 // retries saved, in millionths of a retry
	min     int64        // MinRatio, in millionths of a retry
	max     int64        // MaxRatio, likewise
	burst   int64        // Burst, likewise
}

func newRetryBudget(b RetryBudget) *retryBudget {
	if b.Disabled {
		return nil
	}
	t := &retryBudget{
		min:   int64(math.Round(b.MinRatio * unit)),
		max:   int64(math.Round(b.MaxRatio * unit)),
		burst: int64(b.Burst) * unit,
	}
	t.success.Store(unit)
	t.tokens.Store(t.burst)
	return t
}

// record moves the success rate towards the outcome of an attempt. It
// rounds each step up, so the rate reaches exactly 0 or 1 and then stays
// there without a write.
func (t *retryBudget) record(succeeded bool) {
	if t == nil {
		return
	}
	for {
		old := t.success.Load()
		var n int64
		if succeeded {
			n = old + (unit-old+successWindow-1)/successWindow
		} else {
			n = old - (old+successWindow-1)/successWindow
		}
		if n == old || t.success.CompareAndSwap(old, n) {
			return
		}
	}
}

// earn credits the retries a request earns by being sent.
func (t *retryBudget) earn() {
	if t == nil {
		return
	}
	t.add(max(t.max*t.success.Load()/unit, t.min))
}

// take spends one retry, and reports false when none is left.
func (t *retryBudget) take() bool {
	if t == nil {
		return true
	}
	for {
		old := t.tokens.Load()
		if old < unit {
			return false
		}
		if t.tokens.CompareAndSwap(old, old-unit) {
			return true
		}
	}
}

// refund gives back a retry taken for an attempt that was not sent.
func (t *retryBudget) refund() {
	if t != nil {
		t.add(unit)
	}
}

func (t *retryBudget) add(d int64) {
	for {
		old := t.tokens.Load()
		n := min(old+d, t.burst)
		if n == old || t.tokens.CompareAndSwap(old, n) {
			return
		}
	}
}
