package httpguard

import (
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: with the ratio rule turned off (MinCalls negative), a run of
// ConsecutiveFailures opened the circuit of a provider already failing a
// request in five, where a run of 10 does with the rule on: the failure
// rate it already had was judged on MinCalls calls, and there were none to
// judge it on. Such a provider's circuit opened every few thousand
// attempts, as with the fixed run the rate is there to lengthen.
func TestBreakerWithoutTheRatioRuleNeedsALongerRunOnAProviderAlreadyFailingOften(t *testing.T) {
	srv := newFaultServer(t, httpguardtest.Config{})
	r := newBreakerRig(t, BreakerConfig{MinCalls: -1})
	c := clientFor(t, r.b)
	failThenServe(t, c, srv, 5, 20)

	for range 9 {
		require.NoError(t, srv.Enqueue(httpguardtest.ServiceUnavailable()))
		callChat(c, srv, "m")
	}
	assert.Equal(t, CircuitClosed, r.stats(t).State, "9 in a row at 20%% failures")
	require.NoError(t, srv.Enqueue(httpguardtest.ServiceUnavailable()))
	callChat(c, srv, "m")

	assert.Equal(t, CircuitOpen, r.stats(t).State)
	require.Len(t, r.evs, 1)
	assert.Equal(t, "10 consecutive failures", r.evs[0].Reason)
}
