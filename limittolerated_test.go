package httpguard

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 429 within the share of them a key tolerates (tolerated429Share),
// which reports no spent window, is a degraded provider's: the wait it
// asks for is its own request's (the Retrier's), not every caller's. Each
// such 429 paused the key: at 3% of 200/s answered 429 with
// retry-after-ms: 20 (TestLimiterTakesADegradedProvidersFew429sForNoRateLimit),
// the key served 144.8/s. A 429 reporting a spent window, one beyond the
// tolerated share, or any 429 to a Limiter with no request rate to adapt
// still pauses the key.
func TestLimiterPausesTheKeyOnlyForA429OfTheRate(t *testing.T) {
	degraded := map[string]string{"Retry-After-Ms": "1000"}
	spent := map[string]string{"Retry-After": "1", "X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "1s"}
	for _, tc := range []struct {
		name    string
		cfg     LimitConfig
		at      int64 // the request answered 429
		headers map[string]string
		paused  bool
	}{
		{"1 429 in 20, degraded", LimitConfig{RequestsPerSecond: 100, Burst: 100}, 20, degraded, false},
		{"1 429 in 20, its window spent", LimitConfig{RequestsPerSecond: 100, Burst: 100}, 20, spent, true},
		{"the first answer a 429", LimitConfig{RequestsPerSecond: 100, Burst: 100}, 1, degraded, true},
		{"no request rate", LimitConfig{TokensPerMinute: 1e6}, 20, degraded, true},
	} {
		for _, shared := range []bool{false, true} {
			name := tc.name + "/own store"
			if shared {
				name = tc.name + "/shared store"
			}
			t.Run(name, func(t *testing.T) {
				clk := newFakeClock(moveOn)
				var l *Limiter
				if shared {
					l = newTestLimiter(t, tc.cfg, clk)
				} else {
					var err error
					l, err = NewLimiter(tc.cfg)
					require.NoError(t, err)
					l.now, l.sleep = clk.Now, clk.Sleep
				}
				srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
					if n == tc.at {
						for k, v := range tc.headers {
							w.Header().Set(k, v)
						}
						w.WriteHeader(http.StatusTooManyRequests)
						return
					}
					io.WriteString(w, "ok")
				})

				for range tc.at + 1 {
					_, err := getStatus(t, context.Background(), client, srv.URL)
					require.NoError(t, err)
				}

				if tc.paused {
					assert.Equal(t, []time.Duration{time.Second}, clk.Slept(), "the key paused for the 429's wait")
				} else {
					assert.Empty(t, clk.Slept(), "no caller waited for the degraded provider's 429")
				}
			})
		}
	}
}
