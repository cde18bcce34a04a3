package httpguard

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

// A window reported spent, its reset a Unix time 2 s away: the next
// request waits 2 s, not MaxPause.
func TestLimiterPausesUntilAUnixTimeReset(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Date", clk.Now().Format(http.TimeFormat))
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", strconv.FormatInt(clk.Now().Unix()+2, 10))
		}
		io.WriteString(w, "ok")
	})

	for range 2 {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err)
	}

	assert.Equal(t, []time.Duration{2 * time.Second}, clk.Slept())
}

// A 429 whose spent window reopens at a Unix time 3 s away is retried
// then, not given up on as a year away.
func TestRetrierWaitsForAUnixTimeReset(t *testing.T) {
	reset := strconv.FormatInt(time.Now().Unix()+3, 10)
	s := newServer(t, failFirst(1, http.StatusTooManyRequests, map[string]string{
		"X-Ratelimit-Remaining-Tokens": "0", "X-Ratelimit-Reset-Tokens": reset}))
	p := DefaultRetryPolicy()
	p.Jitter = 0
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	waits := sl.all()
	require.Len(t, waits, 1)
	assert.InDelta(t, 2.5, waits[0].Seconds(), 0.6, "the wait until the reset, %v", waits[0])
}
