package httpguard

import (
	"testing"
)

// BenchmarkFailoverOverhead sends a typical SDK request through the
// Breaker, the Fallback and the whole stack over an in-memory transport;
// compare with BenchmarkOverhead/bare, and the stack with the stack
// without them.
func BenchmarkFailoverOverhead(b *testing.B) {
	newBreaker := func(b *testing.B) *Breaker {
		br, err := NewBreaker(BreakerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		return br
	}
	newFallback := func(b *testing.B) *Fallback {
		f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: "http://api.test/v1"}, {BaseURL: "http://other.test/v1"}}})
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	stack := func(b *testing.B, failover bool) []Layer {
		r, err := NewRetrier(DefaultRetryPolicy())
		if err != nil {
			b.Fatal(err)
		}
		budget, err := NewBudget(BudgetConfig{Limit: MaxBudgetLimit, Prices: PriceTable{FallbackModel: {Input: Dollar, Output: Dollar}}})
		if err != nil {
			b.Fatal(err)
		}
		limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9})
		if err != nil {
			b.Fatal(err)
		}
		if failover {
			return []Layer{newFallback(b), r, newBreaker(b), budget, limiter}
		}
		return []Layer{r, budget, limiter}
	}
	b.Run("bare", func(b *testing.B) { benchmarkRoundTrip(b, memTransport{}) })
	b.Run("breaker", func(b *testing.B) { benchmarkRoundTrip(b, newBreaker(b).Wrap(memTransport{})) })
	b.Run("fallback", func(b *testing.B) { benchmarkRoundTrip(b, newFallback(b).Wrap(memTransport{})) })
	b.Run("stack", func(b *testing.B) { benchmarkRoundTrip(b, Chain(memTransport{}, stack(b, false)...)) })
	b.Run("stack+failover", func(b *testing.B) { benchmarkRoundTrip(b, Chain(memTransport{}, stack(b, true)...)) })
}
