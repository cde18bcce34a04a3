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
// the key served 144.8/s. A 429 reporting a spent window (remaining 0,
// with a reset or without), one beyond the tolerated share, and any 429
// to a Limiter with no request rate to adapt still pause the key. So does
// a Retry-After of whole seconds, but for one second alone that reports
// no spent window, when the key's rate can be lowered: the window reopens
// within the second, a key paused for the whole second at each 429
// served 18.7/s of 50/s (TestLimiterConvergesOnTheProvidersRate), and the
// key's lowered rate spaces its requests instead. A spent quota lowers no
// rate, and a Limiter whose rate may not fall (MinRequestsPerSecond at
// RequestsPerSecond, the README's advice for a degraded provider) has none
// to lower: each pauses for Retry-After: 1 still.
func TestLimiterPausesTheKeyOnlyForA429OfTheRate(t *testing.T) {
	fixed := func(h ...string) func(time.Time) http.Header {
		return func(time.Time) http.Header { return hdr(h...) }
	}
	degraded := fixed("Retry-After-Ms", "1000")
	raOne := fixed("Retry-After", "1")
	rate := LimitConfig{RequestsPerSecond: 100, Burst: 100}
	noAdapting := LimitConfig{RequestsPerSecond: 100, Burst: 100, Adaptive: AdaptiveConfig{MinRequestsPerSecond: 100}}
	noRate := LimitConfig{TokensPerMinute: 1e6}
	for _, tc := range []struct {
		name    string
		cfg     LimitConfig
		at      int64 // the request answered 429
		headers func(now time.Time) http.Header
		body    string
		pause   time.Duration // 0: none, a lowered rate's spacing at most
	}{
		{"1 in 20, degraded", rate, 20, degraded, "", 0},
		{"1 in 20, its window spent", rate, 20,
			fixed("Retry-After", "1", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "1s"), "", time.Second},
		{"1 in 20, its tokens window spent 6s away, Retry-After: 1", rate, 20,
			fixed("Retry-After", "1", "X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Reset-Tokens", "6s"), "", time.Second},
		{"1 in 20, Anthropic's input tokens spent 30s away, retry-after: 1", rate, 20, func(now time.Time) http.Header {
			return hdr("Retry-After", "1", "Date", now.Format(http.TimeFormat), "Anthropic-Ratelimit-Input-Tokens-Remaining", "0",
				"Anthropic-Ratelimit-Input-Tokens-Reset", now.Add(30*time.Second).Format(time.RFC3339))
		}, "", time.Second},
		{"1 in 20, its tokens window spent with no reset (Azure), Retry-After: 6", rate, 20,
			fixed("Retry-After", "6", "X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Remaining-Requests", "12"), "", 6 * time.Second},
		{"the first answer a 429", rate, 1, degraded, "", time.Second},
		{"no request rate", noRate, 20, degraded, "", time.Second},
		{"the first answer a 429, Retry-After: 1 alone", rate, 1, raOne, "", 0},
		{"the first answer a 429, Retry-After: 2 alone", rate, 1, fixed("Retry-After", "2"), "", 2 * time.Second},
		{"no request rate, Retry-After: 1 alone", noRate, 20, raOne, "", time.Second},
		{"a rate that may not fall, Retry-After: 1 alone", noAdapting, 1, raOne, "", time.Second},
		{"a spent quota, Retry-After: 1", rate, 1, raOne, `{"error":{"type":"insufficient_quota","code":"insufficient_quota"}}`, time.Second},
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
						for k, v := range tc.headers(clk.Now()) {
							w.Header()[k] = v
						}
						w.WriteHeader(http.StatusTooManyRequests)
						io.WriteString(w, tc.body)
						return
					}
					io.WriteString(w, "ok")
				})

				for range tc.at + 1 {
					_, err := getStatus(t, context.Background(), client, srv.URL)
					require.NoError(t, err)
				}

				slept := clk.Slept()
				switch {
				case tc.pause > 0:
					assert.Equal(t, []time.Duration{tc.pause}, slept, "the key paused for the 429's wait")
				case tc.at > 1: // within the tolerated share: no cut either
					assert.Empty(t, slept, "no caller waited for the degraded provider's 429")
				default:
					assert.Less(t, slices.Max(append(slept, 0)), 100*time.Millisecond, "no pause, at most a lowered rate's spacing: %v", slept)
				}
			})
		}
	}
}
