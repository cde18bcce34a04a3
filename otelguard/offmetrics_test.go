package otelguard

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
)

// A program that keeps going without metrics when New fails (a meter
// provider that refuses an instrument), or that switches them off by
// configuration, wires a nil *Metrics into its stack: each Layer and hook
// panicked on the first request (a nil pointer dereference in Requests'
// RoundTrip, or in a hook called inside a layer), crashing a client, or a
// proxy's connection. Like a layer left unconfigured, a nil *Metrics now
// records nothing: its Layers pass requests through, its hooks are nil.
// So does the zero Metrics.
func TestAMetricsThatIsOffRecordsNothingAndDoesNotPanic(t *testing.T) {
	for name, m := range map[string]*Metrics{"nil": nil, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			primary, second := faultServer(t), faultServer(t)
			require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
			fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{OnSwitch: m.OnSwitch(),
				Targets: []httpguard.Target{{Name: "primary", BaseURL: primary.BaseURL()}, {Name: "second", BaseURL: second.BaseURL()}}})
			require.NoError(t, err)
			policy := httpguard.DefaultRetryPolicy()
			policy.MaxRetries, policy.BaseDelay, policy.Jitter, policy.OnRetry = 1, time.Millisecond, 0, m.OnRetry()
			retrier, err := httpguard.NewRetrier(policy)
			require.NoError(t, err)
			breaker, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 2, OnStateChange: m.OnStateChange()})
			require.NoError(t, err)
			budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices, MaxWait: -1, OnSettle: m.OnSettle()})
			require.NoError(t, err)
			limiter, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 1000, Burst: 1, OnThrottle: m.OnThrottle()})
			require.NoError(t, err)
			var stop func()
			require.NotPanics(t, func() { stop = m.ObserveBudget(budget, attribute.String("budget", "b")) })
			defer stop()
			r := &rig{srv: primary, client: clientOf(t, primary, m.Requests(), fallback, retrier, breaker, budget, limiter, m.Attempts())}

			for range 3 {
				var status int
				require.NotPanics(t, func() { status, err = r.send(t, context.Background()) })
				require.NoError(t, err)
				assert.Equal(t, http.StatusOK, status, "the second target answers")
			}
			require.EqualValues(t, 2, primary.Stats().Requests, "a retry, then the circuit opened")
			if h := m.OnThrottle(); h != nil { // the Limiter may or may not have made a request wait
				assert.NotPanics(t, func() { h(httpguard.ThrottleEvent{Reason: httpguard.ThrottleServerPause, Wait: time.Second}) })
			}
			if h := m.OnRetry(); h != nil {
				assert.NotPanics(t, func() { h(httpguard.RetryEvent{Err: errors.New("reset")}) })
			}
		})
	}
}
