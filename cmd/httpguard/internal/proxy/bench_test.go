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
// (Retrier and Breaker; for "budget", a Budget pricing the request and
// reading the usage; for "tenant+fallback", a tenant's Budget, the virtual
// key's swap and a Fallback the healthy primary never uses) and the access
// log (to io.Discard).
func BenchmarkServeHTTP(b *testing.B) {
	answer := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}`
	upstream := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(answer)), ContentLength: int64(len(answer)), Request: req}, nil
	})
	base := Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(b, "http://upstream.test/v1"), KeyEnv: "OPENAI_KEY"}},
		Prices: fallbackPrices, Transport: upstream, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Retry: RetrySpec{MaxRetries: 3, BaseDelay: 1, MaxDelay: 1}, Getenv: fallbackKeys}
	budget := base
	budget.Budget = &BudgetSpec{Limit: httpguard.MaxBudgetLimit}
	fallback := base
	fallback.Upstreams = []Upstream{base.Upstreams[0]}
	fallback.Upstreams[0].Fallbacks = []Fallback{{Name: "second", URL: mustURL(b, "http://second.test/v1"), KeyEnv: "SECOND_KEY",
		Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}}}
	fallback.Tenants = []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.MaxBudgetLimit}}}
	for _, tc := range []struct {
		name string
		c    Config
	}{{"retrier", base}, {"budget", budget}, {"tenant+fallback", fallback}} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := New(tc.c)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody))
				if tc.c.Tenants != nil {
					req.Header.Set("Authorization", "Bearer vk-chat")
				}
				w := httptest.NewRecorder()
				p.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
