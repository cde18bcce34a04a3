package otelguard

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// memTransport answers every request at once, without a network.
var memTransport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
})

// BenchmarkOverhead measures what the two Layers add to a request over an
// in-memory transport, recording on the SDK's meter provider, with a
// tenant's attribute in the request's context as the proxy puts it there;
// compare with the bare line.
func BenchmarkOverhead(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { mp.Shutdown(context.Background()) })
	m, err := New(mp)
	if err != nil {
		b.Fatal(err)
	}
	ctx := ContextWithAttributes(context.Background(), attribute.String("tenant", "a"))
	run := func(b *testing.B, rt http.RoundTripper) {
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, memTransport) })
	b.Run("requests+attempts", func(b *testing.B) { run(b, httpguard.Chain(memTransport, m.Requests(), m.Attempts())) })
}
