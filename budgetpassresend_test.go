package httpguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A Budget lets a request it does not price pass (one without a body, a
// count of tokens, one BudgetConfig.Exempt names). Used without a Retrier
// above it, it sent such a request to a provider that resets every HTTP/2
// stream with PROTOCOL_ERROR, and net/http sent it again on its own, at
// once and without end, until the caller's deadline: thousands of
// requests, none billed, but none bounded. The Budget now sends what it
// passes down as a Retrier sends an attempt: net/http's resend fails it.
// Nothing is charged, and none of it was billed: the Limit holds.
func TestBudgetBoundsNetHTTPResendsOfWhatItPasses(t *testing.T) {
	for _, c := range []struct {
		name     string
		method   string
		path     string
		body     func() io.Reader
		maxReads int64
	}{
		{"GET", http.MethodGet, "/v1/models", func() io.Reader { return nil }, 3},
		{"count_tokens", http.MethodPost, "/v1/messages/count_tokens", func() io.Reader { return strings.NewReader(writeOnceBody) }, 1},
		{"exempt", http.MethodPost, "/v1/exempt", func() io.Reader { return strings.NewReader(writeOnceBody) }, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newH2Resetter(t, 1, 1_000_000, "", func(b []byte) Money {
				if strings.Contains(string(b), `"model"`) {
					return testPrices["m"].Cost(Usage{InputTokens: 10, OutputTokens: 5})
				}
				return 0
			}, "{}")
			b := newTestBudget(t, BudgetConfig{Limit: Dollars(1), Exempt: func(r *http.Request) bool { return r.URL.Path == "/v1/exempt" }})
			failsOnResend(t, b, s, func(ctx context.Context, url string) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, c.method, url+c.path, c.body())
			}, c.maxReads)
			assert.Equal(t, Money(0), b.Spent())
		})
	}
}
