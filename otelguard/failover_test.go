package otelguard

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
)

// failoverRig is a dead primary, a healthy second server, and a client
// whose stack is Requests → Fallback → Retrier (no retries) → Breaker
// (open after 2 failures in a row), the hooks wired to one Metrics.
type failoverRig struct {
	*rig
	primary, second *httpguardtest.Server
}

func newFailoverRig(t *testing.T) *failoverRig {
	t.Helper()
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	primary := r.srv
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	second := faultServer(t)

	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Header: http.Header{"Authorization": {"Bearer sk-second"}}},
	}, OnSwitch: r.m.OnSwitch(attribute.String("route", "/v1"))})
	require.NoError(t, err)
	policy := httpguard.DefaultRetryPolicy()
	policy.MaxRetries = 0
	retrier, err := httpguard.NewRetrier(policy)
	require.NoError(t, err)
	breaker, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 2, OnStateChange: r.m.OnStateChange()})
	require.NoError(t, err)
	r.client = clientOf(t, primary, r.m.Requests(), fallback, retrier, breaker, r.m.Attempts())
	return &failoverRig{rig: r, primary: primary, second: second}
}

func TestCountsCircuitStateChangesAndFallbackSwitches(t *testing.T) {
	r := newFailoverRig(t)
	ctx := ContextWithAttributes(context.Background(), attribute.String("tenant", "a"))
	for range 3 {
		status, err := r.send(t, ctx)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status, "the second server answers")
	}
	require.EqualValues(t, 2, r.primary.Stats().Requests, "the circuit opened after 2 failures")

	got := r.collect(t)
	circuit := keyCircuit.String(strings.TrimPrefix(r.primary.URL, "http://") + " deepseek-v3.2")
	assert.EqualValues(t, 1, sum(t, got["httpguard.breaker.state_changes"], circuit, keyFrom.String("closed"), keyTo.String("open")))
	tenant, route := attribute.String("tenant", "a"), attribute.String("route", "/v1")
	from, to := keyFrom.String("primary"), keyTo.String("second")
	assert.EqualValues(t, 2, sum(t, got["httpguard.fallback.switches"], route, tenant, from, to, keyReason.String("status_503")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.fallback.switches"], route, tenant, from, to, keyReason.String("circuit_open")))
	assert.EqualValues(t, 3, sum(t, got["httpguard.requests"], tenant, keyOutcome.String("answered"), keyStatus.Int(200)))
}

func TestCountsAnOpenCircuitsRefusalsAsTheBreakers(t *testing.T) {
	r := newFailoverRig(t)
	require.NoError(t, r.second.StartOutage(httpguardtest.ServiceUnavailable()))
	for range 2 {
		status, err := r.send(t, context.Background())
		require.NoError(t, err)
		require.Equal(t, http.StatusServiceUnavailable, status)
	}
	_, err := r.send(t, context.Background())
	require.ErrorIs(t, err, httpguard.ErrCircuitOpen, "both circuits are open")

	got := r.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.refusals"], keyLayer.String("breaker"), keyReason.String("circuit_open")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("refused")))
	changes, ok := got["httpguard.breaker.state_changes"]
	require.True(t, ok)
	for _, srv := range []*httpguardtest.Server{r.primary, r.second} {
		circuit := keyCircuit.String(strings.TrimPrefix(srv.URL, "http://") + " deepseek-v3.2")
		assert.EqualValues(t, 1, sum(t, changes, circuit, keyFrom.String("closed"), keyTo.String("open")))
	}
}

// A request the primary's Limiter refused, for a pause or a rate its 429s
// set, moves to the next target: the switch says so, not "connection".
func TestSwitchReasonOfALimiterRefusal(t *testing.T) {
	err := fmt.Errorf("httpguard: retry: nothing sent: %w", httpguard.Refuse(fmt.Errorf("limiter: %w", httpguard.ErrRateLimited)))
	assert.Equal(t, "rate_limited", failureReason(0, err))
}
