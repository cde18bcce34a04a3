package httpguard

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An x-ratelimit-reset-* written as a time, RFC 3339 as Anthropic writes
// its resets or an HTTP date as Retry-After may be, is read as that time on
// the server's clock, as those are. It was read as no reset: a response
// reporting a spent window did not pause its key, and a 429 saying so
// fell back to the Retrier's backoff.
func TestParseRateLimitReadsAResetWrittenAsATime(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		now.Add(2 * time.Second).Format(time.RFC3339):                              2 * time.Second,
		now.Add(1500 * time.Millisecond).Format(time.RFC3339Nano):                  1500 * time.Millisecond,
		now.Add(3 * time.Second).In(time.FixedZone("", 3600)).Format(time.RFC3339): 3 * time.Second,
		now.Add(4 * time.Second).Format(http.TimeFormat):                           4 * time.Second,
		now.Add(-5 * time.Second).Format(time.RFC3339):                             0, // past: open already
		now.AddDate(2, 0, 0).Format(time.RFC3339):                                  maxHeaderWait,
		"Wed, 2 Dec": 0,
		"12:00":      0,
	} {
		h := http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {v}}
		assert.Equal(t, want, parseRateLimit(h, now).ResetRequests, "%q", v)
	}
}

// A reset some gateways write as a Unix time, in seconds or milliseconds,
// is read as that time, as Anthropic's RFC 3339 resets are: a plain
// number of seconds that large would be a window reopening in 31 years or
// more. It was read as that many seconds, a wait of a year: the Limiter
// paused the key for MaxPause (60 s) for a window reopening in 2 s, and
// the Retrier gave up on a 429 it could have retried 2 s later.
func TestParseRateLimitReadsAUnixTimeReset(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		strconv.FormatInt(now.Unix()+2, 10):                               2 * time.Second,
		strconv.FormatInt(now.Add(1500*time.Millisecond).UnixMilli(), 10): 1500 * time.Millisecond,
		strconv.FormatInt(now.Unix(), 10) + ".25":                         250 * time.Millisecond,
		strconv.FormatInt(now.Unix()-5, 10):                               0, // past: open already
		strconv.FormatInt(now.UnixMilli()-5000, 10):                       0,
		"3000000":              3000000 * time.Second, // 35 days: seconds still
		"99999999999999999999": maxHeaderWait,
	} {
		h := http.Header{"X-Ratelimit-Remaining-Tokens": {"0"}, "X-Ratelimit-Reset-Tokens": {v}}
		assert.Equal(t, want, parseRateLimit(h, now).ResetTokens, "%q", v)
	}
}

// The resets that name a time, each in the headers that carry it: read on
// the server's clock, as its Date says.
var resetTimes = []struct {
	name             string
	remaining, reset string
	format           func(time.Time) string
}{
	{"RFC 3339", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens", rfc3339},
	{"Unix seconds", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens",
		func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }},
	{"Unix milliseconds", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests",
		func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }},
	{"Anthropic", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset", rfc3339},
	// A gateway's one window, without -requests or -tokens: read as none
	// before, so that neither paused, nor was a 429 retried at its reset.
	{"OpenRouter", "X-Ratelimit-Remaining", "X-Ratelimit-Reset",
		func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }},
}

func rfc3339(t time.Time) string { return t.Format(time.RFC3339) }

// A spent window whose reset is a time 5 s away on the server's clock
// pauses the key 5 s, in an answer or a 429, whichever way this clock is
// off from the server's: read against this clock, a server 30 s behind
// asked for 5 s and got no pause, 30 s ahead 35 s; read as a number of
// seconds, a Unix time paused the key for MaxPause (60 s).
func TestLimiterPausesUntilAResetWrittenAsATime(t *testing.T) {
	for _, f := range resetTimes {
		for _, status := range []int{http.StatusOK, http.StatusTooManyRequests} {
			for _, skew := range []time.Duration{-30 * time.Second, 30 * time.Second, 0} {
				t.Run(f.name+"/"+http.StatusText(status)+"/"+skew.String(), func(t *testing.T) {
					clk := newFakeClock(moveOn)
					l := newTestLimiter(t, LimitConfig{}, clk)
					srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
						if n == 1 {
							server := clk.Now().Add(skew)
							w.Header().Set("Date", server.Format(http.TimeFormat))
							w.Header().Set(f.remaining, "0")
							w.Header().Set(f.reset, f.format(server.Add(5*time.Second)))
							w.WriteHeader(status)
						}
					})

					for range 2 {
						_, err := getStatus(t, context.Background(), client, srv.URL)
						require.NoError(t, err)
					}

					assert.Equal(t, []time.Duration{5 * time.Second}, clk.Slept())
				})
			}
		}
	}
}

// A 429 whose spent window reopens at a time 3 s away is retried then. As
// a time it was retried after the backoff (1 s), into the same spent
// window; as a Unix time, given up on as a year away. The reset is on a
// whole second, which every format writes exactly; the wait is asserted
// from the clock read around the call, not from a fixed value a slow
// machine would miss (the response may take long enough for its Date,
// to the second, to be read instead of this clock: up to 1 s more).
func TestRetrierWaitsForAResetWrittenAsATime(t *testing.T) {
	for _, f := range resetTimes {
		t.Run(f.name, func(t *testing.T) {
			before := time.Now()
			at := before.Truncate(time.Second).Add(3 * time.Second)
			s := newServer(t, failFirst(1, http.StatusTooManyRequests, map[string]string{
				f.remaining: "0", f.reset: f.format(at)}))
			p := DefaultRetryPolicy()
			p.Jitter = 0
			r, sl := newTestRetrier(t, p)
			resp, _ := get(t, clientFor(t, r), s.URL)
			after := time.Now()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			waits := sl.all()
			require.Len(t, waits, 1)
			assert.GreaterOrEqual(t, waits[0], at.Sub(after), "until the reset")
			assert.LessOrEqual(t, waits[0], at.Sub(before)+time.Second, "until the reset")
		})
	}
}
