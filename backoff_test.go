package httpguard

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestExponentialJitterStaysWithinItsBand(t *testing.T) {
	p := DefaultRetryPolicy()
	for n := 0; n < 10; n++ {
		centre := min(p.BaseDelay<<n, p.MaxDelay)
		for i := 0; i < 200; i++ {
			d := p.backoff(n, 0, nil)
			assert.GreaterOrEqual(t, d, centre-p.Jitter)
			assert.LessOrEqual(t, d, centre+p.Jitter)
		}
	}
}

func TestExponentialJitterIsNeverNegative(t *testing.T) {
	p := RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: time.Second, Jitter: time.Second}
	for i := 0; i < 1000; i++ {
		assert.GreaterOrEqual(t, p.backoff(0, 0, nil), time.Duration(0))
	}
}

func TestFullJitterIsUniformBelowTheExponentialCap(t *testing.T) {
	p := RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Strategy: FullJitter}
	var sum time.Duration
	const samples = 4000
	for i := 0; i < samples; i++ {
		d := p.backoff(2, 0, nil)
		assert.GreaterOrEqual(t, d, time.Duration(0))
		assert.LessOrEqual(t, d, 400*time.Millisecond)
		sum += d
	}
	assert.InDelta(t, 200*time.Millisecond, sum/samples, float64(20*time.Millisecond), "mean of U(0, 400ms)")
}

func TestDecorrelatedJitterGrowsFromThePreviousWait(t *testing.T) {
	p := RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Strategy: DecorrelatedJitter}
	for i := 0; i < 1000; i++ {
		d := p.backoff(0, 0, nil)
		assert.GreaterOrEqual(t, d, 100*time.Millisecond)
		assert.LessOrEqual(t, d, 300*time.Millisecond)
		d = p.backoff(3, 900*time.Millisecond, nil)
		assert.GreaterOrEqual(t, d, 100*time.Millisecond)
		assert.LessOrEqual(t, d, time.Second)
	}
}

func TestExponentialCapDoesNotOverflow(t *testing.T) {
	assert.Equal(t, time.Minute, expCap(time.Second, time.Minute, 1000))
	assert.Equal(t, time.Duration(math.MaxInt64), expCap(time.Hour, math.MaxInt64, 200))
	assert.Equal(t, 8*time.Second, expCap(time.Second, time.Minute, 3))
	assert.Zero(t, expCap(0, time.Minute, 3))
}

func TestHugeDelaysDoNotPanicOrWrapAround(t *testing.T) {
	// NewRetrier accepts any non-negative duration; math.MaxInt64 is how
	// people write "no cap".
	huge := time.Duration(math.MaxInt64)
	for _, p := range []RetryPolicy{
		{BaseDelay: time.Second, MaxDelay: huge, Jitter: huge},
		{BaseDelay: huge, MaxDelay: huge, Jitter: time.Second},
		{BaseDelay: huge, MaxDelay: huge, Strategy: FullJitter},
		{BaseDelay: time.Second, MaxDelay: huge, Strategy: FullJitter},
		{BaseDelay: huge, MaxDelay: huge, Strategy: DecorrelatedJitter},
	} {
		for n := range 70 {
			var d time.Duration
			assert.NotPanics(t, func() { d = p.backoff(n, huge, nil) }, "%+v, retry %d", p, n)
			assert.GreaterOrEqual(t, d, time.Duration(0), "%+v, retry %d", p, n)
		}
	}
	p := RetryPolicy{BaseDelay: huge, MaxDelay: huge, Jitter: time.Second}
	assert.GreaterOrEqual(t, p.backoff(0, 0, nil), huge-time.Second, "jitter above the cap saturates, not wraps")
}

func TestBackoffStrategyNames(t *testing.T) {
	assert.Equal(t, "FullJitter", FullJitter.String())
	assert.Equal(t, "BackoffStrategy(invalid)", BackoffStrategy(9).String())
}
