package httpguardtest

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// The server's own rate limit (Config.RequestsPerSecond): a token bucket of
// requests and the headers it reports itself with.

// RateLimitHeaders selects what the server's rate limit says in headers
// (Config.RateLimitHeaders): providers differ, and a client must cope with
// each. The zero value is AllRateLimitHeaders.
type RateLimitHeaders int

const (
	// AllRateLimitHeaders: a refused request gets RateLimited(wait)
	// (retry-after-ms, Retry-After, x-ratelimit-remaining-requests: 0 and
	// x-ratelimit-reset-requests), and other answers carry
	// x-ratelimit-{limit,remaining,reset}-requests. The default.
	//
	// On /v1/messages every mode speaks Anthropic's terms: no
	// retry-after-ms, and anthropic-ratelimit-requests-{limit,remaining,reset}
	// in place of x-ratelimit-*-requests, the reset a time (RFC 3339), so
	// that AllRateLimitHeaders and CoarseRetryAfter answer alike there.
	AllRateLimitHeaders RateLimitHeaders = iota
	// NoRateLimitHeaders: a refused request gets a bare 429 (the
	// rate_limit_exceeded body, no header), and other answers carry no
	// x-ratelimit-* header: a provider that says nothing about its limit.
	NoRateLimitHeaders
	// CoarseRetryAfter: a refused request gets a 429 with Retry-After in
	// whole seconds (rounded up) and the precise wait only in
	// x-ratelimit-reset-requests, without retry-after-ms, as many providers
	// answer; other answers carry x-ratelimit-* as with AllRateLimitHeaders.
	CoarseRetryAfter
)

// fault returns the answer to a request the rate limit refuses, wait
// before it holds a request again.
func (h RateLimitHeaders) fault(wait time.Duration) Fault {
	f := RateLimited(wait)
	switch h {
	case NoRateLimitHeaders:
		f.Header = nil
	case CoarseRetryAfter:
		f.Header.Del("Retry-After-Ms")
	}
	return f
}

// rateLimitHeader returns the x-ratelimit-* headers of an answer from a
// server with a rate limit: the bucket's size, the whole requests left in
// it, and the time until it is full again (OpenAI: "the time until the rate
// limit resets to its initial state"), in Anthropic's terms on
// /v1/messages, reset counted from now.
func rateLimitHeader(api apiShape, limit, remaining int, reset time.Duration, now time.Time) http.Header {
	h := make(http.Header, 3)
	h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(limit))
	h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(remaining))
	h.Set("X-Ratelimit-Reset-Requests", formatReset(reset))
	if api == anthropic {
		return anthropicRateLimitHeader(h, reset, now)
	}
	return h
}

// anthropicNames pairs OpenAI's headers of the request window with
// Anthropic's (https://docs.anthropic.com/en/api/rate-limits, response
// headers).
var anthropicNames = [...]struct{ openAI, anthropic string }{
	{"X-Ratelimit-Limit-Requests", "Anthropic-Ratelimit-Requests-Limit"},
	{"X-Ratelimit-Remaining-Requests", "Anthropic-Ratelimit-Requests-Remaining"},
	{"X-Ratelimit-Reset-Requests", "Anthropic-Ratelimit-Requests-Reset"},
}

// anthropicRateLimitHeader returns h, the rate limit's headers in OpenAI's
// terms, in Anthropic's: x-ratelimit-*-requests become
// anthropic-ratelimit-requests-*, the reset the time it comes (reset from
// now); retry-after-ms, which Anthropic does not send, is dropped; the
// other headers (Retry-After) stay. h is not changed.
func anthropicRateLimitHeader(h http.Header, reset time.Duration, now time.Time) http.Header {
	if h == nil {
		return nil
	}
	h = h.Clone()
	h.Del("Retry-After-Ms")
	for _, n := range anthropicNames {
		v, ok := h[n.openAI]
		if !ok {
			continue
		}
		delete(h, n.openAI)
		if n.openAI == "X-Ratelimit-Reset-Requests" {
			v = []string{formatResetTime(now.Add(reset))}
		}
		h[n.anthropic] = v
	}
	return h
}

// formatResetTime formats t, rounded up to the millisecond, in RFC 3339 and
// UTC, as Anthropic writes its resets. Anthropic's are whole seconds; the
// fraction keeps a wait of milliseconds exact for a client that follows it.
func formatResetTime(t time.Time) string {
	if r := t.Truncate(time.Millisecond); r.Before(t) {
		t = r.Add(time.Millisecond)
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// bucket is a token bucket of requests. It holds burst tokens at most and
// gains rate tokens per second; a request takes one.
type bucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now time.Time) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// take takes a token if there is one at now. It returns the whole tokens
// left, the time until the bucket is full, and, when it refused, the time
// until a token is available.
func (b *bucket) take(now time.Time) (ok bool, remaining int, reset, wait time.Duration) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(b.burst, b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		ok = true
	} else {
		wait = seconds((1 - b.tokens) / b.rate)
	}
	return ok, int(b.tokens), seconds((b.burst - b.tokens) / b.rate), wait
}

// seconds converts s seconds to a Duration, rounding up to the nanosecond
// so that a client waiting that long finds the token there.
func seconds(s float64) time.Duration {
	// A rate of a request in over a century (1e-10/s) would overflow a
	// Duration, and converting an out-of-range float is undefined (0 or
	// negative here: Retry-After: 0, a storm of retries): it saturates at
	// maxWait, far below where Retry-After's rounding up overflows.
	return time.Duration(math.Min(math.Ceil(s*float64(time.Second)), float64(maxWait)))
}

// maxWait bounds the waits the rate limit announces: a century and a half.
const maxWait = time.Duration(1 << 62)
