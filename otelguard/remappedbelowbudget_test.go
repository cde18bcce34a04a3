package otelguard

import (
	"context"
	"net/http"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fallback placed below a Budget (not the recommended order) sends
// nothing to a target that would run another model than the one the
// Budget priced, and moves on. The switch was counted as
// reason=connection, an outage of a target that was never tried.
func TestCountsASwitchPastATargetRemappedBelowABudgetByItsOwnReason(t *testing.T) {
	primary, remapped, third := faultServer(t), faultServer(t), faultServer(t)
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	m, reader := newMetrics(t)
	fallback, err := httpguard.NewFallback(httpguard.FallbackConfig{OnSwitch: m.OnSwitch(), Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "remapped", BaseURL: remapped.BaseURL(), Models: map[string]string{"deepseek-v3.2": "deepseek-r1"}},
		{Name: "third", BaseURL: third.BaseURL()},
	}})
	require.NoError(t, err)
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices, MaxWait: -1})
	require.NoError(t, err)
	r := &rig{srv: primary, reader: reader, m: m, client: clientOf(t, primary, m.Requests(), budget, fallback, m.Attempts())}

	status, err := r.send(t, context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, "the third target answers")
	require.Zero(t, remapped.Stats().Requests, "nothing was sent to the remapped target")

	switches := r.collect(t)["httpguard.fallback.switches"]
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("primary"), keyTo.String("remapped"), keyReason.String("status_503")))
	assert.EqualValues(t, 1, sum(t, switches, keyFrom.String("remapped"), keyTo.String("third"), keyReason.String("remapped_below_budget")))
	assert.Zero(t, sum(t, switches, keyFrom.String("remapped"), keyTo.String("third"), keyReason.String("connection")))
}
