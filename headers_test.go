package httpguard

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

var now0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestRetryAfterReadsEveryForm(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"none", hdr(), 0, false},
		{"seconds", hdr("Retry-After", "3"), 3 * time.Second, true},
		{"fractional seconds", hdr("Retry-After", "1.5"), 1500 * time.Millisecond, true},
		{"http date", hdr("Retry-After", now0.Add(90*time.Second).Format(http.TimeFormat)), 90 * time.Second, true},
		{"date in the past", hdr("Retry-After", now0.Add(-time.Hour).Format(http.TimeFormat)), 0, true},
		{"ms wins over seconds", hdr("Retry-After-Ms", "250", "Retry-After", "3"), 250 * time.Millisecond, true},
		{"azure ms", hdr("X-Ms-Retry-After-Ms", "40"), 40 * time.Millisecond, true},
		{"bad ms falls back", hdr("Retry-After-Ms", "soon", "Retry-After", "2"), 2 * time.Second, true},
		{"negative", hdr("Retry-After", "-5"), 0, false},
		{"garbage", hdr("Retry-After", "tomorrow"), 0, false},
		{"inf", hdr("Retry-After", "Inf"), 0, false},
		{"nan", hdr("Retry-After-Ms", "NaN"), 0, false},
		{"exponent", hdr("Retry-After", "1e9"), 0, false},
		{"huge is clamped", hdr("Retry-After", "99999999999999999999999"), maxHeaderWait, true},
		{"beyond float64 is clamped", hdr("Retry-After", "1"+strings.Repeat("0", 400)), maxHeaderWait, true},
		{"ms beyond float64 is clamped", hdr("Retry-After-Ms", "1"+strings.Repeat("0", 400)), maxHeaderWait, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, ok := serverWait(c.h, now0)
			assert.Equal(t, c.ok, ok)
			assert.Equal(t, c.want, d)
		})
	}
}

func TestParseRateLimitReadsOpenAIAndAnthropicHeaders(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.Header
		want rateLimit
	}{
		{"none", hdr(), rateLimit{-1, -1, 0, 0}},
		{"openai", hdr("X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "20ms",
			"X-Ratelimit-Remaining-Tokens", "1500", "X-Ratelimit-Reset-Tokens", "6m0s"),
			rateLimit{0, 1500, 20 * time.Millisecond, 6 * time.Minute}},
		{"plain seconds", hdr("X-Ratelimit-Reset-Requests", "2"), rateLimit{-1, -1, 2 * time.Second, 0}},
		{"gateway -1", hdr("X-Ratelimit-Remaining-Requests", "-1", "X-Ratelimit-Reset-Requests", "-1s"), rateLimit{-1, -1, 0, 0}},
		{"garbage", hdr("X-Ratelimit-Remaining-Tokens", "lots", "X-Ratelimit-Reset-Tokens", "later"), rateLimit{-1, -1, 0, 0}},
		{"anthropic", hdr(
			"Anthropic-Ratelimit-Requests-Remaining", "4",
			"Anthropic-Ratelimit-Requests-Reset", now0.Add(time.Second).Format(time.RFC3339),
			"Anthropic-Ratelimit-Tokens-Remaining", "900",
			"Anthropic-Ratelimit-Tokens-Reset", now0.Add(2*time.Second).Format(time.RFC3339),
			"Anthropic-Ratelimit-Output-Tokens-Remaining", "0",
			"Anthropic-Ratelimit-Output-Tokens-Reset", now0.Add(9*time.Second).Format(time.RFC3339)),
			rateLimit{4, 0, time.Second, 9 * time.Second}},
		{"anthropic bad time", hdr("Anthropic-Ratelimit-Requests-Remaining", "0", "Anthropic-Ratelimit-Requests-Reset", "noon"),
			rateLimit{0, -1, 0, 0}},
		{"a gateway's one window", hdr("X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset", strconv.FormatInt(now0.Add(1500*time.Millisecond).UnixMilli(), 10)),
			rateLimit{0, -1, 1500 * time.Millisecond, 0}},
		{"a gateway's window beside the requests'", hdr("X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset", "60",
			"X-Ratelimit-Remaining-Requests", "7", "X-Ratelimit-Reset-Requests", "20ms"),
			rateLimit{7, -1, 20 * time.Millisecond, 0}},
		{"a gateway's window, no reset", hdr("X-Ratelimit-Remaining", "0"), rateLimit{0, -1, 0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, parseRateLimit(c.h, now0))
		})
	}
}

func TestExhaustedWaitIsTheLongestSpentWindow(t *testing.T) {
	d, ok := rateLimit{0, 0, time.Second, time.Minute}.exhaustedWait()
	assert.True(t, ok)
	assert.Equal(t, time.Minute, d)
	d, ok = rateLimit{0, 10, time.Second, time.Minute}.exhaustedWait()
	assert.True(t, ok)
	assert.Equal(t, time.Second, d)
	_, ok = rateLimit{3, 10, time.Second, time.Minute}.exhaustedWait()
	assert.False(t, ok)
	_, ok = rateLimit{0, -1, 0, 0}.exhaustedWait()
	assert.False(t, ok, "spent but no reset: nothing to wait for")
}

// A reset written as a Go duration too long for a Duration to hold
// ("3000000h", ~342 years) is a wait as long as any, capped as "8760h" or
// plain seconds are; it was read as none, and neither the Retrier's
// MaxServerDelay nor the Limiter's MaxPause applied.
func TestResetBeyondADurationIsTheLongestWait(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"3000000h": maxHeaderWait, "+3000000h": maxHeaderWait, "2562048h1.5s": maxHeaderWait,
		"99999999999999999999ns": maxHeaderWait, "8760h": maxHeaderWait, "1m30s": 90 * time.Second,
		"-3000000h": 0, "3000000x": 0, "3000000": 3000000 * time.Second, "h": 0, "1..5h": 0, ".h": 0, "abc": 0, "": 0,
	} {
		assert.Equal(t, want, parseReset(v, time.Now()), "%q", v)
	}
	h := http.Header{"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"3000000h"}}
	d, ok := parseRateLimit(h, time.Now()).exhaustedWait()
	assert.True(t, ok)
	assert.Equal(t, maxHeaderWait, d, "a spent window, reset beyond a Duration")
}

func TestServerWaitPrefersThePreciseWait(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"none", hdr(), 0, false},
		{"Retry-After alone", hdr("Retry-After", "3"), 3 * time.Second, true},
		{"a precise reset refines Retry-After: 1",
			hdr("Retry-After", "1", "X-Ratelimit-Reset-Requests", "20ms"), 20 * time.Millisecond, true},
		{"with remaining 0 too",
			hdr("Retry-After", "1", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "20ms"), 20 * time.Millisecond, true},
		{"Retry-After: 0 rounded down",
			hdr("Retry-After", "0", "X-Ratelimit-Reset-Requests", "300ms"), 300 * time.Millisecond, true},
		{"an HTTP date is whole seconds",
			hdr("Retry-After", now0.Add(2*time.Second).Format(http.TimeFormat), "X-Ratelimit-Reset-Requests", "1.25s"), 1250 * time.Millisecond, true},
		{"the longest reset within the second",
			hdr("Retry-After", "2", "X-Ratelimit-Reset-Requests", "1.2s", "X-Ratelimit-Reset-Tokens", "1.8s"), 1800 * time.Millisecond, true},
		{"a reset far from Retry-After is another window",
			hdr("Retry-After", "30", "X-Ratelimit-Reset-Requests", "20ms"), 30 * time.Second, true},
		{"a window with room does not count",
			hdr("Retry-After", "1", "X-Ratelimit-Remaining-Requests", "12", "X-Ratelimit-Reset-Requests", "20ms"), time.Second, true},
		{"a fractional Retry-After is precise already",
			hdr("Retry-After", "1.5", "X-Ratelimit-Reset-Requests", "20ms"), 1500 * time.Millisecond, true},
		{"retry-after-ms first",
			hdr("Retry-After-Ms", "35", "Retry-After", "1", "X-Ratelimit-Reset-Requests", "20ms"), 35 * time.Millisecond, true},
		{"a spent window without Retry-After",
			hdr("X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Reset-Tokens", "6m0s"), 6 * time.Minute, true},
		{"a reset alone, remaining not said", hdr("X-Ratelimit-Reset-Requests", "20ms"), 0, false},
		{"Anthropic's reset time",
			hdr("Retry-After", "1", "Anthropic-Ratelimit-Requests-Remaining", "0",
				"Anthropic-Ratelimit-Requests-Reset", now0.Add(400*time.Millisecond).Format(time.RFC3339Nano)), 400 * time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, ok := serverWait(c.h, now0)
			assert.Equal(t, c.ok, ok)
			assert.Equal(t, c.want, d)
		})
	}
}

func FuzzServerWait(f *testing.F) {
	for _, s := range []string{"", "0", "1", "1.5", "-1", "20ms", "6m0s", "Wed, 21 Oct 2015 07:28:00 GMT", "1e400", "99999999999999999999"} {
		f.Add(s, s, s, s)
	}
	f.Fuzz(func(t *testing.T, ms, ra, remaining, reset string) {
		h := hdr("Retry-After-Ms", ms, "Retry-After", ra, "X-Ratelimit-Remaining-Requests", remaining, "X-Ratelimit-Reset-Requests", reset)
		d, ok := serverWait(h, now0)
		if d < 0 || d > maxHeaderWait || (!ok && d != 0) {
			t.Fatalf("serverWait = %v, %v", d, ok)
		}
		// The most a precise reset moves Retry-After is a second.
		if ra, _, raOK := retryAfterHeader(h, now0); raOK {
			if _, msOK := retryAfterMs(h); !msOK && (d-ra).Abs() >= time.Second {
				t.Fatalf("serverWait = %v, Retry-After %v", d, ra)
			}
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "3", "1.5", "-1", "Inf", "1e3", ".", "Wed, 21 Oct 2015 07:28:00 GMT", "999999999999999999999"} {
		f.Add(s, s)
	}
	f.Add("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:27:00 GMT")
	f.Fuzz(func(t *testing.T, ra, ms string) {
		d, ok := serverWait(hdr("Retry-After", ra, "Retry-After-Ms", ms, "Date", ms), now0)
		if d < 0 || d > maxHeaderWait || (!ok && d != 0) {
			t.Fatalf("serverWait(%q, %q) = %v, %v", ra, ms, d, ok)
		}
	})
}

func FuzzParseRateLimit(f *testing.F) {
	for _, s := range []string{"", "0", "-1", "20ms", "6m0s", "1.5", "2026-11-25T12:00:09Z", "9223372036854775807", "1e400", "3000000h", "1..5h"} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, remaining, reset, anthropicReset string) {
		rl := parseRateLimit(hdr(
			"X-Ratelimit-Remaining-Requests", remaining, "X-Ratelimit-Reset-Requests", reset,
			"Anthropic-Ratelimit-Tokens-Remaining", remaining, "Anthropic-Ratelimit-Tokens-Reset", anthropicReset,
			"X-Ratelimit-Remaining", remaining, "X-Ratelimit-Reset", anthropicReset,
		), now0)
		for _, d := range []time.Duration{rl.ResetRequests, rl.ResetTokens} {
			if d < 0 || d > maxHeaderWait {
				t.Fatalf("reset out of range: %+v", rl)
			}
		}
		if rl.RemainingRequests < -1 || rl.RemainingTokens < -1 {
			t.Fatalf("remaining out of range: %+v", rl)
		}
	})
}
