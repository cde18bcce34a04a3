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

// A spent window whose reset is an RFC 3339 time 5 s away on the server's
// clock pauses the key 5 s, whichever way this clock is off from the
// server's.
func TestLimiterPausesUntilAResetWrittenAsATime(t *testing.T) {
	for _, skew := range []time.Duration{-30 * time.Second, 30 * time.Second, 0} {
		t.Run(skew.String(), func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					server := clk.Now().Add(skew)
					w.Header().Set("Date", server.Format(http.TimeFormat))
					w.Header().Set("X-Ratelimit-Remaining-Tokens", "0")
					w.Header().Set("X-Ratelimit-Reset-Tokens", server.Add(5*time.Second).Format(time.RFC3339))
				}
				io.WriteString(w, "ok")
			})

			for range 2 {
				_, err := getStatus(t, context.Background(), client, srv.URL)
				require.NoError(t, err)
			}

			assert.Equal(t, []time.Duration{5 * time.Second}, clk.Slept())
		})
	}
}

// A 429 whose spent window reopens at an RFC 3339 time 3 s away is
// retried then; it was retried after the backoff (1 s), into the same
// spent window.
func TestRetrierWaitsForAResetWrittenAsATime(t *testing.T) {
	reset := time.Now().Add(3 * time.Second).Format(time.RFC3339)
	s := newServer(t, failFirst(1, http.StatusTooManyRequests, map[string]string{
		"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": reset}))
	p := DefaultRetryPolicy()
	p.Jitter = 0
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	waits := sl.all()
	require.Len(t, waits, 1)
	assert.InDelta(t, 2.5, waits[0].Seconds(), 0.6, "the wait until the reset, %v", waits[0])
}
