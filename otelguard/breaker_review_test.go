package otelguard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Was a bug (found by a review): OnStateChange labels
// httpguard.breaker.state_changes with the circuit's key, by default the
// host and the model the request names, verbatim. The Breaker sweeps idle
// circuits, so its memory is bounded; the metric is not: while a provider
// is down, a caller (a gateway's tenant) naming a new model string in each
// request opens a circuit, hence a new time series, per string, kept for
// the process's life. This is the unbounded cardinality from request data
// that OnSettle avoids by labelling with Settlement.PricedAs. The label now
// takes at most maxCircuitLabels keys, and otherCircuit for the rest.
func TestCircuitLabelIsNotOneSeriesPerCallerChosenModel(t *testing.T) {
	srv := faultServer(t)
	require.NoError(t, srv.StartOutage(httpguardtest.ServiceUnavailable()))
	m, reader := newMetrics(t)
	breaker, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 1, OnStateChange: m.OnStateChange()})
	require.NoError(t, err)
	client := clientOf(t, srv, breaker)

	const n = maxCircuitLabels + 20
	for i := range n {
		body := fmt.Sprintf(`{"model":"user-chosen-%d","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, i)
		resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}
	require.Len(t, breaker.Stats(), n, "a circuit opened per model string")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var points []metricdata.DataPoint[int64]
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name == "httpguard.breaker.state_changes" {
				points = append(points, md.Data.(metricdata.Sum[int64]).DataPoints...)
			}
		}
	}
	assert.Len(t, points, maxCircuitLabels+1, "model strings a caller chooses must not each add a series")
	other := attribute.NewSet(keyCircuit.String(otherCircuit), keyFrom.String("closed"), keyTo.String("open"))
	for _, p := range points {
		if p.Attributes.Equals(&other) {
			assert.EqualValues(t, 20, p.Value, "the circuits past the bound share one series")
		}
	}
}
