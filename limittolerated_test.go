package httpguard

import (
	"context"
	"io"
	"net/http"
	"slices"
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
// still pauses the key. So does a Retry-After of whole seconds, but for
// one second alone (see serverPause): the window reopens within it, and a
// key paused for the whole second at each 429 served 18.7/s of 50/s
// (TestLimiterConvergesOnTheProvidersRate); the key's lowered rate spaces
// its requests instead.
func TestLimiterPausesTheKeyOnlyForA429OfTheRate(t *testing.T) {
	degraded := map[string]string{"Retry-After-Ms": "1000"}
	spent := map[string]string{"Retry-After": "1", "X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "1s"}
	rate := LimitConfig{RequestsPerSecond: 100, Burst: 100}
	for _, tc := range []struct {
		name    string
		cfg     LimitConfig
		at      int64 // the request answered 429
		headers map[string]string
		pause   time.Duration
	}{
		{"1 429 in 20, degraded", rate, 20, degraded, 0},
		{"1 429 in 20, its window spent", rate, 20, spent, time.Second},
		{"the first answer a 429", rate, 1, degraded, time.Second},
		{"no request rate", LimitConfig{TokensPerMinute: 1e6}, 20, degraded, time.Second},
		{"the first answer a 429, Retry-After: 1 alone", rate, 1, map[string]string{"Retry-After": "1"}, 0},
		{"the first answer a 429, Retry-After: 2 alone", rate, 1, map[string]string{"Retry-After": "2"}, 2 * time.Second},
		{"no request rate, Retry-After: 1 alone", LimitConfig{TokensPerMinute: 1e6}, 20, map[string]string{"Retry-After": "1"}, time.Second},
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

				slept := clk.Slept()
				if tc.pause > 0 {
					assert.Equal(t, []time.Duration{tc.pause}, slept, "the key paused for the 429's wait")
				} else {
					assert.Less(t, slices.Max(append(slept, 0)), 100*time.Millisecond, "no pause, at most a lowered rate's spacing: %v", slept)
				}
			})
		}
	}
}
