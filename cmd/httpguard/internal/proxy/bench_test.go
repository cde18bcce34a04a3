package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
)

// BenchmarkServeHTTP measures what the proxy adds to a JSON chat request,
// over an in-memory upstream: the handler, the ReverseProxy, the stack
// (Retrier and, for "budget", a Budget pricing the request and reading the
// usage) and the access log (to io.Discard).
func BenchmarkServeHTTP(b *testing.B) {
	answer := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}`
	upstream := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(answer)), ContentLength: int64(len(answer)), Request: req}, nil
	})
	for _, tc := range []struct {
		name   string
		budget *BudgetSpec
	}{{"retrier", nil}, {"budget", &BudgetSpec{Limit: httpguard.MaxBudgetLimit}}} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := New(Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(b, "http://upstream.test/v1")}},
				Prices: testPrices, Budget: tc.budget, Transport: upstream, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Retry: RetrySpec{MaxRetries: 3, BaseDelay: 1, MaxDelay: 1}})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody))
				w := httptest.NewRecorder()
				p.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
