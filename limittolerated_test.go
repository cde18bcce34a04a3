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

// A cut on a share of 429s under chanceCut times the tolerated one may be
// a degraded provider's random faults passing it by chance: its 429s are
// forgotten, and the next 429 is judged on its own. Kept, they stayed
// counted for a second against the fewer requests of the lowered rate,
// and the next fault cut again, and the next (3% at random, eight runs:
// 134/s of 200/s on average, 39/s in the worst; now 186/s and 167/s). A
// share far beyond (429s piling up, within one round, while the rate was
// far above the provider's) is kept: the next 429 of the lowered rate cuts
// again at once.
func TestLimiterForgetsThe429sOfAChanceCut(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1000}, clk)
	ks := limKey(t, l, "h", "m")
	takeTurns(t, l, ks, clk, 100)
	tooMany := func(sentAt time.Time) {
		l.observe(bareRequest, nil, ks, 0, &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody}, sentAt, noEnd)
	}
	sent := clk.Now()
	clk.Advance(time.Millisecond)
	for range 7 { // 7 of 100: beyond 6%, under twice it
		tooMany(sent)
	}
	require.EqualValues(t, 1, l.Stats().SlowDowns)

	clk.Advance(time.Millisecond)
	tooMany(clk.Now().Add(-time.Microsecond)) // sent after the cut
	assert.EqualValues(t, 1, l.Stats().SlowDowns, "the chance cut's 429s forgotten: 1 of 100")

	for range 20 { // sent before the cut: its round, which cuts no more
		tooMany(sent)
	}
	require.EqualValues(t, 1, l.Stats().SlowDowns)
	clk.Advance(time.Millisecond)
	tooMany(clk.Now().Add(-time.Microsecond))
	require.EqualValues(t, 2, l.Stats().SlowDowns, "22 of 100: a new round's cut")
	clk.Advance(time.Millisecond)
	tooMany(clk.Now().Add(-time.Microsecond))
	assert.EqualValues(t, 3, l.Stats().SlowDowns, "the cut on 22% kept its 429s: the next cuts again")
}

// A key running at its rate whose provider's rate falls draws 429s that
// pass the tolerated share gradually: its first cut is on a share just
// beyond it, under chanceCut times, and forgets its 429s. The cuts that
// follow within a second are no chance: they keep theirs, and each next
// cut comes on the next round's 429, as before chance cuts forgot. Each
// forgot them too: every cut then took another 6% of the last second's
// requests in 429s, and against a provider falling from 200/s to 25/s
// (bare 429s, simulated) the key drew 66 429s in the 10 s after, where
// it had drawn 23 (34 now).
func TestLimiterKeepsThe429sOfACutSoonAfterAChanceCut(t *testing.T) {
	for _, shared := range []bool{false, true} {
		name := "own store"
		if shared {
			name = "shared store"
		}
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(block)
			cfg := LimitConfig{RequestsPerSecond: 1000, Burst: 1000}
			var l *Limiter
			if shared {
				l = newTestLimiter(t, cfg, clk)
			} else {
				var err error
				l, err = NewLimiter(cfg)
				require.NoError(t, err)
				l.now, l.sleep = clk.Now, clk.Sleep
			}
			ks := limKey(t, l, "h", "m")
			takeTurns(t, l, ks, clk, 100)
			tooMany := func() {
				l.observe(bareRequest, nil, ks, 0, &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody},
					clk.Now().Add(-time.Microsecond), noEnd)
				clk.Advance(time.Millisecond)
			}
			for l.Stats().SlowDowns == 0 { // 7 of 100: a chance cut's share
				tooMany()
			}
			for l.Stats().SlowDowns == 1 { // 7 more: the chance cut forgot its 429s
				tooMany()
			}
			tooMany()
			assert.EqualValues(t, 3, l.Stats().SlowDowns, "a cut within a second of the last kept its 429s: the next round's 429 cuts")
		})
	}
}

// takeTurns has n requests of ks take their turns at once, a millisecond
// apart.
func takeTurns(t *testing.T, l *Limiter, ks *keyState, clk *fakeClock, n int) {
	t.Helper()
	for range n {
		var p place
		wait, _, err := l.turn(context.Background(), ks, &p, 0, clk.Now(), anyWait)
		require.NoError(t, err)
		require.Zero(t, wait)
		clk.Advance(time.Millisecond)
	}
}
