package otelguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Was a bug: OnStateChange labelled httpguard.circuit with the circuit's
// key as it came, and the key holds the model a request names, in bytes
// the caller chooses (a body's raw string, an Azure deployment's escaped
// path). OTLP carries attribute values in protobuf strings, which must be
// UTF-8: one request naming "gpt-4\xff" while its provider failed made
// every later export of the MeterProvider fail to marshal ("string field
// contains invalid UTF-8"), the counter's series being kept for the
// process's life; Prometheus refuses such a label value too. Bytes that
// are not UTF-8 now read as U+FFFD.
func TestCircuitLabelIsUTF8WhateverTheModelsBytes(t *testing.T) {
	for name, tc := range map[string]struct{ path, model string }{
		"a body's model":      {"/v1/chat/completions", "gpt-4\xff\xfe"},
		"a deployment's path": {"/openai/deployments/gpt-4%FF/chat/completions?api-version=2024-10-21", "ignored"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			t.Cleanup(srv.Close)
			m, reader := newMetrics(t)
			breaker, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 1, OnStateChange: m.OnStateChange()})
			require.NoError(t, err)
			base := srv.Client().Transport.(*http.Transport).Clone()
			t.Cleanup(base.CloseIdleConnections)
			client := &http.Client{Transport: httpguard.Chain(base, breaker)}

			resp, err := client.Post(srv.URL+tc.path, "application/json", strings.NewReader(`{"model":"`+tc.model+`","messages":[]}`))
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			require.Len(t, breaker.Stats(), 1)
			require.Equal(t, httpguard.CircuitOpen, breaker.Stats()[0].State)

			var rm metricdata.ResourceMetrics
			require.NoError(t, reader.Collect(context.Background(), &rm))
			labels := 0
			for _, sm := range rm.ScopeMetrics {
				for _, md := range sm.Metrics {
					for _, p := range md.Data.(metricdata.Sum[int64]).DataPoints {
						v, ok := p.Attributes.Value(keyCircuit)
						require.True(t, ok)
						labels++
						assert.True(t, utf8.ValidString(v.AsString()), "%q", v.AsString())
					}
				}
			}
			assert.Equal(t, 1, labels, "the circuit's opening is counted")
		})
	}
}
