package httpguard

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file reads what providers say in response headers about when to come
// back. Every parser here takes untrusted input: it never panics, never
// returns a negative duration and clamps absurd values to maxHeaderWait.

// maxHeaderWait bounds any wait read from a header, so that arithmetic on it
// cannot overflow. Callers apply their own, much smaller caps.
const maxHeaderWait = 365 * 24 * time.Hour

// serverWait returns the wait a refusal (a 429, a 503) asks for, the most
// precise a server says: retry-after-ms or x-ms-retry-after-ms first; then
// Retry-After, except that a whole-second Retry-After (an integer or an
// HTTP date) gives way to the reset of a rate-limit window, precise to the
// millisecond, that is within a second of it, since it is then that
// reset rounded (Retry-After: 1 with x-ratelimit-reset-requests: 20ms waits
// 20ms); failing both, the reset of a window the response reports as spent.
// Only windows not reported to have room count (remaining 0, or not said),
// and of those the longest reset. ok is false when nothing says a wait.
func serverWait(h http.Header, now time.Time) (d time.Duration, ok bool) {
	d, _, ok = refusalWait(h, parseRateLimit(h, serverNow(h, now)), now)
	return d, ok
}

// refusalWait is serverWait given rl, h's windows read on the server's
// clock, with coarse set when the wait is a whole-second Retry-After no
// reset refined.
func refusalWait(h http.Header, rl rateLimit, now time.Time) (d time.Duration, coarse, ok bool) {
	if d, ok := retryAfterMs(h); ok {
		return d, false, true
	}
	ra, coarse, ok := retryAfterHeader(h, now)
	if !ok {
		d, ok = rl.exhaustedWait()
		return d, false, ok
	}
	if coarse {
		if reset, ok := rl.resetNear(ra); ok {
			return reset, false, true
		}
	}
	return ra, coarse, true
}

// spent reports whether a window is reported with no room left
// (remaining 0), with a reset or without one (Azure may send none).
func (rl rateLimit) spent() bool {
	return rl.RemainingRequests == 0 || rl.RemainingTokens == 0
}

// retryAfterMs reads retry-after-ms and x-ms-retry-after-ms.
func retryAfterMs(h http.Header) (time.Duration, bool) {
	for _, k := range [...]string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if v := h.Get(k); v != "" {
			if d, ok := parseSeconds(v, float64(time.Millisecond)); ok {
				return d, true
			}
		}
	}
	return 0, false
}

// retryAfterHeader reads Retry-After; coarse is true when it is whole
// seconds (an integer or an HTTP date) rather than a fraction.
func retryAfterHeader(h http.Header, now time.Time) (d time.Duration, coarse, ok bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false, false
	}
	if d, ok := parseSeconds(v, float64(time.Second)); ok {
		return d, !strings.Contains(v, "."), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return untilTime(t, serverNow(h, now)), true, true
	}
	return 0, false, false
}

// serverNow returns the time on the server's clock when this clock reads
// now, for a response h that arrived at now. A time a server sends (a
// Retry-After date, an Anthropic reset) is on its own clock: counted from
// the Date it sent, the wait is the one it meant, whichever way this clock
// is off from its. A Date this clock agrees with, to the second a Date is
// written in, leaves now, the finer reading; so does a missing or
// malformed Date.
func serverNow(h http.Header, now time.Time) time.Time {
	date := h["Date"]
	if len(date) == 0 {
		return now
	}
	sent, err := http.ParseTime(date[0])
	if err != nil {
		return now
	}
	if d := now.Sub(sent); d >= 0 && d < time.Second {
		return now
	}
	return sent
}

// parseSeconds parses a non-negative decimal number of units.
func parseSeconds(v string, unit float64) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || !isDecimal(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && !math.IsInf(f, 1) { // a decimal beyond float64 is +Inf: clamped below
		return 0, false
	}
	if f < 0 || math.IsNaN(f) {
		return 0, false
	}
	return clampWait(f * unit), true
}

// isDecimal reports whether v is digits with at most one '.', which keeps
// out the "Inf", "NaN", hex and exponent forms ParseFloat also accepts.
func isDecimal(v string) bool {
	dot := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.' && !dot:
			dot = true
		case c < '0' || c > '9':
			return false
		}
	}
	return v != "."
}

func clampWait(ns float64) time.Duration {
	if ns >= float64(maxHeaderWait) {
		return maxHeaderWait
	}
	if ns <= 0 {
		return 0
	}
	return time.Duration(ns)
}

func untilTime(t, now time.Time) time.Duration {
	d := t.Sub(now)
	if d < 0 {
		return 0
	}
	if d > maxHeaderWait {
		return maxHeaderWait
	}
	return d
}

// rateLimit is what a response says about the provider's request and token
// windows. A Remaining of -1 means the response did not say; a Reset of 0
// means it did not say or the window is already open.
type rateLimit struct {
	RemainingRequests, RemainingTokens int64
	ResetRequests, ResetTokens         time.Duration
}

// parseRateLimit reads OpenAI-style x-ratelimit-{remaining,reset}-{requests,tokens}
// (resets are Go durations such as "6m0s" or "20ms"; plain seconds, days,
// "1d2h3m", Unix times, RFC 3339 times and HTTP dates are accepted too) and Anthropic's anthropic-ratelimit-{requests,tokens,
// input-tokens,output-tokens}-{remaining,reset} (resets are RFC 3339 times),
// and, failing both for requests, a gateway's x-ratelimit-{remaining,reset}
// (OpenRouter's, its reset a Unix time in milliseconds) as the requests window.
// For tokens, the most constrained of Anthropic's token windows wins.
// now is the server's clock (see serverNow), from which the times count.
// Malformed values, negative counts and the -1 some gateways send are read as
// "not said".
func parseRateLimit(h http.Header, now time.Time) rateLimit {
	rl := rateLimit{
		RemainingRequests: parseCount(h.Get("X-Ratelimit-Remaining-Requests")),
		RemainingTokens:   parseCount(h.Get("X-Ratelimit-Remaining-Tokens")),
		ResetRequests:     parseReset(h.Get("X-Ratelimit-Reset-Requests"), now),
		ResetTokens:       parseReset(h.Get("X-Ratelimit-Reset-Tokens"), now),
	}
	if rl.RemainingRequests < 0 {
		rl.RemainingRequests = parseCount(h.Get("Anthropic-Ratelimit-Requests-Remaining"))
	}
	if rl.ResetRequests == 0 {
		rl.ResetRequests = parseTimeReset(h.Get("Anthropic-Ratelimit-Requests-Reset"), now)
	}
	if rl.RemainingRequests < 0 {
		// A gateway's one window, as OpenRouter's: x-ratelimit-remaining
		// and x-ratelimit-reset (a Unix time in milliseconds there).
		if rl.RemainingRequests = parseCount(h.Get("X-Ratelimit-Remaining")); rl.RemainingRequests >= 0 && rl.ResetRequests == 0 {
			rl.ResetRequests = parseReset(h.Get("X-Ratelimit-Reset"), now)
		}
	}
	if rl.RemainingTokens < 0 {
		for _, w := range [...]string{"Tokens", "Input-Tokens", "Output-Tokens"} {
			n := parseCount(h.Get("Anthropic-Ratelimit-" + w + "-Remaining"))
			if n < 0 || (rl.RemainingTokens >= 0 && n > rl.RemainingTokens) {
				continue
			}
			reset := parseTimeReset(h.Get("Anthropic-Ratelimit-"+w+"-Reset"), now)
			if n == rl.RemainingTokens && reset < rl.ResetTokens {
				continue
			}
			rl.RemainingTokens, rl.ResetTokens = n, reset
		}
	}
	return rl
}

// exhaustedWait returns how long until the windows the response reports as
// spent (remaining 0) reopen: the longest of their resets. ok is false when
// no window is reported spent with a known reset.
func (rl rateLimit) exhaustedWait() (d time.Duration, ok bool) {
	if rl.RemainingRequests == 0 && rl.ResetRequests > 0 {
		d, ok = rl.ResetRequests, true
	}
	if rl.RemainingTokens == 0 && rl.ResetTokens > d {
		d, ok = rl.ResetTokens, true
	}
	return d, ok
}

// resetNear returns the longest reset, among the windows not reported to
// have room, that is less than a second away from d.
func (rl rateLimit) resetNear(d time.Duration) (reset time.Duration, ok bool) {
	for _, w := range [...]struct {
		remaining int64
		reset     time.Duration
	}{{rl.RemainingRequests, rl.ResetRequests}, {rl.RemainingTokens, rl.ResetTokens}} {
		if w.remaining <= 0 && w.reset > 0 && (w.reset-d).Abs() < time.Second && w.reset > reset {
			reset, ok = w.reset, true
		}
	}
	return reset, ok
}

// parseCount parses a non-negative integer count; anything else is -1.
func parseCount(v string) int64 {
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// parseReset parses a Go duration ("1s", "6m0s", "20ms"), plain seconds,
// or a number of days, alone or before a Go duration ("1d", "1d2h3m"), as
// some providers write a daily window's reset, or a time: a Unix time (see
// unixReset), an RFC 3339 time as Anthropic writes its resets, or an HTTP
// date as Retry-After may be. A time's wait counts from now, the server's
// clock.
func parseReset(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if d, ok := parseSeconds(v, float64(time.Second)); ok {
		if t, ok := unixReset(v); ok {
			return untilTime(t, now)
		}
		return d
	}
	if strings.IndexByte(v, ':') >= 0 { // in every time, in no duration
		return parseTimeReset(v, now)
	}
	days, rest, ok := strings.Cut(v, "d") // no Go duration unit has a d
	if !ok {
		d, _ := goDuration(v)
		return d
	}
	n, ok := parseSeconds(days, float64(24*time.Hour))
	if !ok || days != strings.TrimSpace(days) {
		return 0
	}
	d, ok := time.Duration(0), true
	if rest != "" {
		d, ok = goDuration(rest)
	}
	if !ok {
		return 0
	}
	return min(n+d, maxHeaderWait) // each is at most a year: no overflow
}

// unixReset reads v, a non-negative decimal number, as the Unix time some
// gateways write a reset as: in seconds from 1e9 (2001) on, in
// milliseconds from 1e12 (2001 again) to 1e15. A number of seconds that
// large would be a reset 31 years away or more, which no window has.
// ok is false for a smaller number, or a larger one, a wait as long as
// the seconds it says (clamped to maxHeaderWait).
func unixReset(v string) (t time.Time, ok bool) {
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || f < 1e9 || f >= 1e15:
		return time.Time{}, false
	case f >= 1e12:
		return time.UnixMilli(int64(f)), true
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// goDuration parses a non-negative Go duration; ok is false when it does
// not parse or is negative.
func goDuration(v string) (d time.Duration, ok bool) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil && durationBeyondRange(v):
		return maxHeaderWait, true // "3000000h": a wait, longer than a Duration holds
	case err != nil || d < 0:
		return 0, false
	}
	return min(d, maxHeaderWait), true
}

// durationBeyondRange reports whether v, which time.ParseDuration refused,
// is written as a positive Go duration, numbers each with its unit: it was
// refused for its size.
func durationBeyondRange(v string) bool {
	v = strings.TrimPrefix(v, "+")
	if v == "" {
		return false
	}
	for v != "" {
		n := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if n <= 0 || strings.Count(v[:n], ".") > 1 || v[:n] == "." {
			return false
		}
		v = v[n:]
		u := strings.IndexFunc(v, func(r rune) bool { return r == '.' || r >= '0' && r <= '9' })
		if u < 0 {
			u = len(v)
		}
		switch v[:u] {
		case "ns", "us", "µs", "μs", "ms", "s", "m", "h":
		default:
			return false
		}
		v = v[u:]
	}
	return true
}

// parseTimeReset parses an RFC 3339 time, or an HTTP date, and returns the
// wait until it from now.
func parseTimeReset(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	v = strings.TrimSpace(v)
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		if t, err = http.ParseTime(v); err != nil {
			return 0
		}
	}
	return untilTime(t, now)
}

// hasServerWait reports whether h asks for a wait in a header that a
// plugged-in Backoff may read itself: Retry-After, retry-after-ms.
func hasServerWait(h http.Header) bool {
	_, ms := retryAfterMs(h)
	return ms || h.Get("Retry-After") != ""
}
