package httpguard

import (
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// A BackoffStrategy says how BaseDelay, MaxDelay and Jitter of a RetryPolicy
// turn into the wait before each retry. The zero value is ExponentialJitter.
//
// The strategies follow AWS's "Exponential Backoff and Jitter" study. When
// few clients compete (one service calling a provider), ExponentialJitter is
// predictable and matches the HolySheep reference client. When many clients
// retry against the same overloaded server, FullJitter spreads them best and
// does the least total work; DecorrelatedJitter does almost as little work
// and finishes slightly sooner.
type BackoffStrategy int

const (
	// ExponentialJitter waits min(BaseDelay·2^n, MaxDelay) ± Jitter before
	// retry n (0-based), never less than zero. A wait can exceed MaxDelay by
	// at most Jitter.
	ExponentialJitter BackoffStrategy = iota
	// FullJitter waits a uniformly random time in [0, min(BaseDelay·2^n,
	// MaxDelay)]. Jitter is not used.
	FullJitter
	// DecorrelatedJitter waits min(MaxDelay, U(BaseDelay, 3·previous wait)),
	// starting from BaseDelay. Jitter is not used.
	DecorrelatedJitter
)

// String returns the strategy's name, such as "FullJitter".
func (s BackoffStrategy) String() string {
	switch s {
	case ExponentialJitter:
		return "ExponentialJitter"
	case FullJitter:
		return "FullJitter"
	case DecorrelatedJitter:
		return "DecorrelatedJitter"
	}
	return "BackoffStrategy(invalid)"
}

// BackoffFunc computes the wait before retry attemptNum (0-based) from the
// policy's BaseDelay (min) and MaxDelay (max) and the response that failed
// (nil after a transport error). It has the shape of go-retryablehttp's
// Backoff, so retryablehttp.DefaultBackoff and LinearJitterBackoff plug in
// as they are. A negative result means no wait. The Retrier still waits at
// least what the server asks for. It is called from the goroutines of
// concurrent requests, so it must be safe for concurrent use.
type BackoffFunc func(min, max time.Duration, attemptNum int, resp *http.Response) time.Duration

// backoff returns the wait before retry n (0-based) given the previous wait.
func (p *RetryPolicy) backoff(n int, prev time.Duration, resp *http.Response) time.Duration {
	if p.Backoff != nil {
		return max(p.Backoff(p.BaseDelay, p.MaxDelay, n, resp), 0)
	}
	switch p.Strategy {
	case FullJitter:
		return randBetween(0, expCap(p.BaseDelay, p.MaxDelay, n))
	case DecorrelatedJitter:
		if prev < p.BaseDelay {
			prev = p.BaseDelay
		}
		hi := p.MaxDelay
		if prev <= p.MaxDelay/3 {
			hi = 3 * prev
		}
		return min(randBetween(p.BaseDelay, hi), p.MaxDelay)
	default:
		d := expCap(p.BaseDelay, p.MaxDelay, n)
		if p.Jitter > 0 {
			if j := randBetween(-p.Jitter, p.Jitter); j > math.MaxInt64-d {
				d = math.MaxInt64 // saturate: d+j would wrap around
			} else {
				d += j
			}
		}
		return max(d, 0)
	}
}

// expCap returns min(base·2^n, ceiling) without overflowing.
func expCap(base, ceiling time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	for ; n > 0; n-- {
		if base >= ceiling/2 {
			return ceiling
		}
		base *= 2
	}
	return min(base, ceiling)
}

// randBetween returns a uniformly random duration in [lo, hi].
func randBetween(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	// In uint64: hi-lo+1 overflows int64 for huge delays or jitter (and
	// rand.N panics on what it wraps to); lo plus the draw is in [lo, hi].
	span := uint64(hi) - uint64(lo)
	if span == math.MaxUint64 {
		return lo + time.Duration(rand.Uint64())
	}
	return lo + time.Duration(rand.Uint64N(span+1))
}
