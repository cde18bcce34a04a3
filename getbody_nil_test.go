package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A GetBody that returns neither a body nor an error breaks its side of
// the contract, but no layer may panic on it: each read a nil reader
// (found by an adversarial hunt). The request goes out with its own Body
// (a 503 first, so that a Retrier asks GetBody for its retry), and the
// caller gets an answer or an error.
func TestNoLayerPanicsOnAGetBodyReturningNothing(t *testing.T) {
	var hits atomic.Int32
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if hits.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	t.Cleanup(primary.Close)
	second := httptest.NewServer(primary.Config.Handler)
	t.Cleanup(second.Close)

	prices := PriceTable{"m": {Input: Dollar, Output: Dollar}}
	layers := map[string]func(t *testing.T) []Layer{
		"retrier": func(t *testing.T) []Layer { r, _ := newTestRetrier(t, DefaultRetryPolicy()); return []Layer{r} },
		"budget": func(t *testing.T) []Layer {
			return []Layer{newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})}
		},
		"limiter": func(t *testing.T) []Layer {
			return []Layer{newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 10, TokensPerMinute: 1e6}, nil)}
		},
		"breaker": func(t *testing.T) []Layer { return []Layer{newBreakerRig(t, BreakerConfig{}).b} },
		"fallback": func(t *testing.T) []Layer {
			f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {BaseURL: second.URL + "/v1"}}})
			require.NoError(t, err)
			return []Layer{f}
		},
		"stack": func(t *testing.T) []Layer {
			f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {BaseURL: second.URL + "/v1"}}})
			require.NoError(t, err)
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			return []Layer{f, r, newBreakerRig(t, BreakerConfig{}).b, newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices}),
				newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 10, TokensPerMinute: 1e6}, nil)}
		},
	}
	const body = `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	for name, stack := range layers {
		t.Run(name, func(t *testing.T) {
			c := clientFor(t, stack(t)...)
			for range 2 {
				req, err := http.NewRequest("POST", primary.URL+"/v1/chat/completions", strings.NewReader(body))
				require.NoError(t, err)
				req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
				assert.NotPanics(t, func() {
					resp, err := c.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
		})
	}
}
