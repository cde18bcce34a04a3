package httpguard

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The reset forms an x-ratelimit-reset-* header comes in: Go durations,
// plain seconds, and a number of days before either, as some providers
// write a daily window's reset. A day form was read as no reset at all.
func TestParseResetReadsEveryForm(t *testing.T) {
	const day = 24 * time.Hour
	for v, want := range map[string]time.Duration{
		"6m0s": 6 * time.Minute, "20ms": 20 * time.Millisecond, "1.5s": 1500 * time.Millisecond,
		"1m30.5s": 90*time.Second + 500*time.Millisecond, "0.5": 500 * time.Millisecond, " 1s ": time.Second,
		"1d": day, "7d": 7 * day, "1d2h3m": day + 2*time.Hour + 3*time.Minute, "1.5d": 36 * time.Hour,
		"0d20ms": 20 * time.Millisecond, "2d0s": 2 * day,
		"400d": maxHeaderWait, "99999999999999999999d": maxHeaderWait, "1d3000000h": maxHeaderWait,
		"d": 0, ".d": 0, "1dd": 0, "1d-5s": 0, "-1d": 0, "1d5": 0, "1d2x": 0, "2h1d": 0,
	} {
		assert.Equal(t, want, parseReset(v, time.Now()), "%q", v)
	}
}

// A daily window spent, its reset a day away: the Limiter pauses the key
// for MaxPause rather than sending into the spent window at once.
func TestLimiterPausesForADayFormReset(t *testing.T) {
	for _, reset := range []string{"1d", "1d2h3m"} {
		t.Run(reset, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{MaxPause: 20 * time.Second}, clk)
			srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
					w.Header().Set("X-Ratelimit-Reset-Requests", reset)
				}
				io.WriteString(w, "ok")
			})

			for range 2 {
				_, err := getStatus(t, context.Background(), client, srv.URL)
				require.NoError(t, err)
			}

			assert.Equal(t, []time.Duration{20 * time.Second}, clk.Slept())
		})
	}
}

// A 429 whose spent window reopens in a day is not worth retrying.
func TestRetrierStopsOnADayFormReset(t *testing.T) {
	s := newServer(t, failFirst(1, http.StatusTooManyRequests, map[string]string{
		"X-Ratelimit-Remaining-Tokens": "0", "X-Ratelimit-Reset-Tokens": "1d"}))
	p := DefaultRetryPolicy()
	p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, time.Millisecond, 0
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Empty(t, sl.all())
}

func FuzzParseReset(f *testing.F) {
	for _, s := range []string{"", "0", "1d", "1d2h3m", "6m0s", "20ms", "1.5s", "0.5", "3000000h", "1..5h", "400d", "1d-5s", "99999999999999999999d", "+1s", "d0", "2026-12-04T10:00:02Z", "Fri, 04 Dec 2026 10:00:04 GMT", strings.Repeat("9", 400) + "d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseReset(v, time.Now())
		if d < 0 || d > maxHeaderWait {
			t.Fatalf("parseReset(%q) = %v", v, d)
		}
		// A Go duration reads as time.ParseDuration reads it.
		if g, err := time.ParseDuration(strings.TrimSpace(v)); err == nil && g >= 0 && g <= maxHeaderWait && d != g {
			t.Fatalf("parseReset(%q) = %v, time.ParseDuration %v", v, d, g)
		}
		// Days before a Go duration add up, capped.
		days, rest, ok := strings.Cut(strings.TrimSpace(v), "d")
		if !ok || days == "" || !isDecimal(days) {
			return
		}
		fdays, err := strconv.ParseFloat(days, 64) // +Inf, with ErrRange, past float64's range: capped below
		if !errors.Is(err, strconv.ErrRange) {
			require.NoError(t, err)
		}
		n, err := time.ParseDuration(rest)
		if rest == "" {
			n, err = 0, nil
		}
		if err != nil || n < 0 {
			return
		}
		want := float64(n) + fdays*float64(24*time.Hour)
		if want = math.Min(want, float64(maxHeaderWait)); math.Abs(float64(d)-want) > 1 {
			t.Fatalf("parseReset(%q) = %v, want %v", v, d, time.Duration(want))
		}
	})
}
