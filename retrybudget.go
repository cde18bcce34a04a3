package httpguard

import (
	"fmt"
	"math"
	"sync/atomic"
)

// RetryBudget bounds the retries of all requests that share a Retrier, so
// that a full outage does not multiply the load on a failing server. It is
// gRPC's retry throttling: the budget holds Tokens tokens and starts full;
// every attempt that fails in a retryable way takes one token, every other
// outcome gives back Refund tokens, and a retry is allowed only while more
// than half of Tokens remain.
//
// A lone request on a fresh Retrier therefore gets all its retries, a
// service with a few percent of transient errors never runs dry, and during
// an outage retries stop once the headroom (Tokens/2 failures) is spent;
// after the outage, Tokens/(2·Refund) successes restore them. In steady state
// at most about Refund retries happen per successful request.
//
// The zero value means the defaults: 20 tokens, a refund of 0.1. A
// RetryBudget is configuration; the running count lives in the Retrier,
// which is safe for concurrent use.
type RetryBudget struct {
	// Tokens is the capacity and the starting level. 0 means 20, which lets
	// a lone request on a fresh Retrier make up to 10 failed attempts
	// before the budget stops retries.
	Tokens float64
	// Refund is what each non-failing outcome gives back. 0 means 0.1.
	Refund float64
	// Disabled turns the budget off: each request gets all its retries
	// whatever happens to the others. false, the zero value, means on.
	Disabled bool
}

const (
	defaultBudgetTokens = 20
	defaultBudgetRefund = 0.1
	milli               = 1000 // tokens are counted in thousandths
)

func (b RetryBudget) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"Tokens", b.Tokens}, {"Refund", b.Refund}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v > 1e9 {
			return fmt.Errorf("httpguard: retry: Budget.%s must be a finite number in [0, 1e9], got %v", f.name, f.v)
		}
	}
	return nil
}

// retryTokens is the running state of a RetryBudget, safe for concurrent
// use; a nil *retryTokens allows every retry.
type retryTokens struct {
	level  atomic.Int64 // thousandths of a token
	max    int64
	refund int64
}

func newRetryTokens(b RetryBudget) *retryTokens {
	if b.Disabled {
		return nil
	}
	if b.Tokens == 0 {
		b.Tokens = defaultBudgetTokens
	}
	if b.Refund == 0 {
		b.Refund = defaultBudgetRefund
	}
	t := &retryTokens{max: int64(b.Tokens * milli), refund: max(int64(b.Refund*milli), 1)}
	t.level.Store(t.max)
	return t
}

// allow reports whether a retry may start now.
func (t *retryTokens) allow() bool {
	return t == nil || 2*t.level.Load() > t.max
}

// failed takes a token for an attempt that failed in a retryable way.
func (t *retryTokens) failed() {
	if t != nil {
		t.add(-milli)
	}
}

// succeeded gives back Refund for any other outcome.
func (t *retryTokens) succeeded() {
	if t != nil && t.level.Load() < t.max {
		t.add(t.refund)
	}
}

func (t *retryTokens) add(d int64) {
	for {
		old := t.level.Load()
		n := min(max(old+d, 0), t.max)
		if n == old || t.level.CompareAndSwap(old, n) {
			return
		}
	}
}
