package otelguard

import (
	"context"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Was a bug (found by a review): a nil *Budget is a layer left
// unconfigured, which Chain skips and whose Wrap passes requests through,
// so that "layers switched on by configuration need no if". Observing one
// (m.ObserveBudget(budget) with the budget off) panicked at the next
// collection, inside the meter provider's reader: a crash of the process
// on its first export or scrape. It now observes nothing.
func TestObservingANilBudgetRecordsNothingAndDoesNotPanic(t *testing.T) {
	m, reader := newMetrics(t)
	var off *httpguard.Budget // switched off by configuration
	stop := m.ObserveBudget(off, attribute.String("budget", "off"))
	defer stop()
	var rm metricdata.ResourceMetrics
	assert.NotPanics(t, func() { reader.Collect(context.Background(), &rm) })
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if g, ok := md.Data.(metricdata.Gauge[float64]); ok && md.Name == "httpguard.budget.remaining" {
				assert.Empty(t, g.DataPoints)
			}
		}
	}
}

// A Budget written as a struct literal (&httpguard.Budget{}) instead of
// made by NewBudget fails each request it wraps, saying which constructor
// to call. Observing one panicked at the next collection (a nil pointer
// dereference in Budget.Totals), inside the meter provider's reader: a
// crash of the process at its first export or scrape, far from the
// mistake. A collection now records no point for it, as for a store that
// fails.
func TestObservingAZeroBudgetRecordsNothingAndDoesNotPanic(t *testing.T) {
	m, reader := newMetrics(t)
	stop := m.ObserveBudget(&httpguard.Budget{}, attribute.String("budget", "literal"))
	defer stop()
	var rm metricdata.ResourceMetrics
	require.NotPanics(t, func() { reader.Collect(context.Background(), &rm) })
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if g, ok := md.Data.(metricdata.Gauge[float64]); ok && md.Name == "httpguard.budget.remaining" {
				assert.Empty(t, g.DataPoints)
			}
		}
	}
}
