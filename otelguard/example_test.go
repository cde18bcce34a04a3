package otelguard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/otelguard"
)

// Metrics wired into a Retrier's hook and around the stack count the
// requests that left it, the attempts sent and the retries decided.
func ExampleNew() {
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, `{"choices":[]}`)
	}))
	defer api.Close()

	reader := sdkmetric.NewManualReader() // an exporter's reader in production
	m, err := otelguard.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		panic(err)
	}
	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = time.Millisecond, 0 // quick for the example
	policy.OnRetry = m.OnRetry()
	retrier, err := httpguard.NewRetrier(policy)
	if err != nil {
		panic(err)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: httpguard.Chain(transport, m.Requests(), retrier, m.Attempts())}

	resp, err := client.Get(api.URL + "/v1/models")
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, name := range []string{"httpguard.requests", "httpguard.attempts", "httpguard.retries"} {
		fmt.Println(name, sum(rm, name))
	}
	// Output:
	// httpguard.requests 1
	// httpguard.attempts 2
	// httpguard.retries 1
}

// sum adds up the points of the counter named name.
func sum(rm metricdata.ResourceMetrics, name string) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, p := range s.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}
