package httpguard

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// An Anthropic reset, a time on the server's clock, is read against the
// Date the server sent (see TestLimiterPausesUntilAResetWrittenAsATime for
// the Limiter). The Retrier reads one in a 429 against the Date too.
func TestRetrierReadsAnthropicResetAgainstTheServersDate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{-30 * time.Second, 30 * time.Second} {
		t.Run(skew.String(), func(t *testing.T) {
			server := now.Add(skew)
			s := newServer(t, failFirst(1, http.StatusTooManyRequests, map[string]string{
				"Date": server.Format(http.TimeFormat), "Anthropic-Ratelimit-Tokens-Remaining": "0",
				"Anthropic-Ratelimit-Tokens-Reset": server.Add(10 * time.Second).Format(time.RFC3339)}))
			p := DefaultRetryPolicy()
			p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, time.Millisecond, 0
			r, sl := newTestRetrier(t, p)
			r.now = func() time.Time { return now }
			resp, _ := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, []time.Duration{10 * time.Second}, sl.all())
		})
	}
}

// A Date is written to the second: a clock that agrees with it to that
// second is the finer reading, and an Anthropic reset 400 ms away is read
// as 400 ms, not up to a second more.
func TestServerNowKeepsThisClockWhenItAgreesWithTheDate(t *testing.T) {
	date := now0.Format(http.TimeFormat)
	for _, c := range []struct {
		name string
		h    http.Header
		now  time.Time
		want time.Time
	}{
		{"no Date", http.Header{}, now0.Add(time.Hour), now0.Add(time.Hour)},
		{"a malformed Date", http.Header{"Date": {"yesterday"}}, now0.Add(time.Hour), now0.Add(time.Hour)},
		{"within the Date's second", http.Header{"Date": {date}}, now0.Add(900 * time.Millisecond), now0.Add(900 * time.Millisecond)},
		{"a second after the Date", http.Header{"Date": {date}}, now0.Add(1500 * time.Millisecond), now0},
		{"before the Date", http.Header{"Date": {date}}, now0.Add(-time.Millisecond), now0},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, serverNow(c.h, c.now))
		})
	}

	h := hdr("Date", date, "Anthropic-Ratelimit-Requests-Remaining", "0",
		"Anthropic-Ratelimit-Requests-Reset", now0.Add(time.Second).Format(time.RFC3339))
	d, ok := serverWait(h, now0.Add(600*time.Millisecond))
	assert.True(t, ok)
	assert.Equal(t, 400*time.Millisecond, d)
}
