package httpguardtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Fault describes how the server fails one request. At most one of Status,
// Reset and CutAfter may be set; a Fault with none of them (only Delay)
// answers normally, late. The zero Fault answers normally.
//
// Faults are values: the server copies them, Header included, so changing
// a Fault after handing it over has no effect.
type Fault struct {
	// Delay is how long the server waits before anything else, headers
	// included (on top of Config.Latency): slow headers, or extra latency.
	// When the client goes away or the server closes first, the
	// connection is reset and nothing is answered.
	Delay time.Duration

	// Status, when non-zero, is the status code of an error answer sent
	// instead of a completion: Header, then Body or an error body rendered
	// from Type, Code and Message in the endpoint's shape, OpenAI's
	// {"error":{"message","type","param","code"}} or Anthropic's
	// {"type":"error","error":{"type","message","details":{"error_code"}}}.
	Status int

	// Header holds headers sent with the error answer.
	Header http.Header

	// Type and Code are the error's type and code ("insufficient_quota").
	// An empty Type means the endpoint's type for the status: OpenAI's
	// "server_error" for statuses >= 500 and "invalid_request_error"
	// otherwise; Anthropic's "api_error" for statuses >= 500, and
	// "authentication_error" (401), "permission_error" (403),
	// "not_found_error" (404), "request_too_large" (413),
	// "rate_limit_error" (429), "overloaded_error" (529) or
	// "invalid_request_error". An empty Code is sent as null by OpenAI's
	// endpoint, and left out (no details) by Anthropic's.
	Type, Code string

	// Message is the error's message; empty means the status text.
	Message string

	// Body, when non-empty, is sent verbatim (as application/json unless
	// Header says otherwise) instead of the rendered error body.
	Body string

	// Reset makes the server reset the connection (a TCP RST, after
	// Delay) instead of answering: the client sees a transport error.
	Reset bool

	// StallBody, when above zero, makes the server stall an error answer
	// (Status) partway: it sends the headers and the first half of the
	// body, then waits StallBody, or until the client goes away or the
	// server closes, before the rest. A StallBody longer than the test (an
	// hour) is a body that never ends; Close ends the wait.
	StallBody time.Duration

	// CutAfter, when above zero, makes the server answer normally but
	// reset the connection partway: a stream after its first CutAfter
	// events (keep-alive comments not counted; a stream with fewer events
	// loses at least its last one), a JSON answer after half its body
	// (headers declare the full length). Cut answers are billed (the
	// Billable counters, as a provider bills them), but not counted as
	// answers sent to their end (PromptTokens, CompletionTokens).
	CutAfter int

	// kind marks the faults of RateLimited, QuotaExceeded and
	// ServiceUnavailable, which /v1/messages answers in Anthropic's terms
	// (see inAnthropicTerms); wait is RateLimited's.
	kind faultKind
	wait time.Duration
}

// faultKind tells apart the faults this package's constructors make in
// OpenAI's terms.
type faultKind int

const (
	customFault faultKind = iota
	rateLimitedFault
	quotaFault
	unavailableFault
)

// inAnthropicTerms returns f as /v1/messages answers it at now: a fault of
// RateLimited, QuotaExceeded or ServiceUnavailable with Anthropic's type,
// code and rate-limit headers in place of OpenAI's; any other fault as it
// is.
func (f Fault) inAnthropicTerms(now time.Time) Fault {
	switch f.kind {
	case rateLimitedFault:
		f.Type, f.Code = "rate_limit_error", ""
		f.Header = anthropicRateLimitHeader(f.Header, f.wait, now)
	case quotaFault:
		// Anthropic's monthly spend cap: a 429 retrying does not help.
		f.Type, f.Code = "rate_limit_error", "enforced_spend_limit_reached"
	case unavailableFault:
		f.Type = "api_error"
	}
	return f
}

// clone returns a copy of f that shares nothing with it: the server keeps
// clones, so that the caller's later changes to f.Header reach none of them.
func (f Fault) clone() Fault {
	f.Header = f.Header.Clone()
	return f
}

func (f *Fault) validate() error {
	n := 0
	for _, set := range []bool{f.Status != 0, f.Reset, f.CutAfter != 0} {
		if set {
			n++
		}
	}
	switch {
	case f.Delay < 0:
		return fmt.Errorf("Delay must be >= 0, got %v", f.Delay)
	case f.Status != 0 && (f.Status < 200 || f.Status > 999):
		return fmt.Errorf("Status must be in [200, 999], got %d", f.Status)
	case f.CutAfter < 0:
		return fmt.Errorf("CutAfter must be >= 0, got %d", f.CutAfter)
	case f.StallBody < 0:
		return fmt.Errorf("StallBody must be >= 0, got %v", f.StallBody)
	case f.StallBody > 0 && f.Status == 0:
		return errors.New("StallBody needs Status: it stalls an error answer")
	case n > 1:
		return errors.New("at most one of Status, Reset and CutAfter may be set")
	}
	return nil
}

// ServiceUnavailable returns a 503 fault with an OpenAI-style server_error
// body; /v1/messages answers it with Anthropic's api_error, its type for a
// 5xx.
func ServiceUnavailable() Fault {
	return Fault{Status: http.StatusServiceUnavailable, Type: "server_error",
		Message: "The server is temporarily unable to handle the request.", kind: unavailableFault}
}

// RateLimited returns a 429 fault that asks the client to wait: it carries
// retry-after-ms (wait in milliseconds, rounded up), Retry-After (whole
// seconds, rounded up, as most providers send it),
// x-ratelimit-remaining-requests: 0 and x-ratelimit-reset-requests (wait as
// a Go duration), and the body OpenAI sends with code rate_limit_exceeded.
// The server's own rate limit (Config.RequestsPerSecond) answers with it.
//
// /v1/messages answers it as Anthropic does: Retry-After,
// anthropic-ratelimit-requests-remaining: 0 and
// anthropic-ratelimit-requests-reset (when the wait ends, counted from the
// answer, in RFC 3339), no retry-after-ms, and type rate_limit_error
// without a code. Other headers set on the fault are sent on both
// endpoints.
func RateLimited(wait time.Duration) Fault {
	wait = max(wait, 0)
	h := http.Header{}
	h.Set("Retry-After-Ms", strconv.FormatInt(ceilDiv(wait, time.Millisecond), 10))
	h.Set("Retry-After", strconv.FormatInt(ceilDiv(wait, time.Second), 10))
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	h.Set("X-Ratelimit-Reset-Requests", formatReset(wait))
	return Fault{Status: http.StatusTooManyRequests, Header: h, Type: "requests", Code: "rate_limit_exceeded",
		kind: rateLimitedFault, wait: wait,
		Message: "Rate limit reached for requests. Please try again in " + formatReset(wait) + "."}
}

// QuotaExceeded returns the 429 OpenAI sends when the account's quota is
// spent (type and code insufficient_quota, no Retry-After): retrying does
// not help. /v1/messages answers it as Anthropic does when the monthly
// spend cap is reached: type rate_limit_error with
// "details":{"error_code":"enforced_spend_limit_reached"}.
func QuotaExceeded() Fault {
	return Fault{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
		Message: "You exceeded your current quota, please check your plan and billing details.", kind: quotaFault}
}

// Overloaded returns the 529 Anthropic sends when it is overloaded (type
// overloaded_error).
func Overloaded() Fault {
	return Fault{Status: 529, Type: "overloaded_error", Message: "Overloaded"}
}

// ConnectionReset returns a fault that resets the connection without an
// answer.
func ConnectionReset() Fault { return Fault{Reset: true} }

// SlowHeaders returns a fault that answers normally after d; see
// Fault.Delay.
func SlowHeaders(d time.Duration) Fault { return Fault{Delay: d} }

// CutStream returns a fault that resets the connection after the first
// events of the answer; see Fault.CutAfter.
func CutStream(events int) Fault { return Fault{CutAfter: events} }

// formatReset formats d, rounded up to the millisecond, as the Go duration
// OpenAI sends ("1s", "20ms", "6m0s").
func formatReset(d time.Duration) string {
	return (time.Duration(min(ceilDiv(d, time.Millisecond), int64(maxWait/time.Millisecond))) * time.Millisecond).String()
}

func ceilDiv(d, unit time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	q := d / unit // not (d + unit - 1) / unit, which overflows near the largest Duration
	if d%unit != 0 {
		q++
	}
	return int64(q)
}

// stallingWriter writes the first half of the error body, then waits d
// before the rest, for Fault.StallBody.
type stallingWriter struct {
	http.ResponseWriter
	s   *Server
	ctx context.Context
	d   time.Duration
}

func (w *stallingWriter) Write(b []byte) (int, error) {
	half := len(b) / 2
	n, err := w.ResponseWriter.Write(b[:half])
	if err != nil {
		return n, err
	}
	http.NewResponseController(w.ResponseWriter).Flush()
	if !w.s.wait(w.ctx, w.d) {
		return n, errStalled
	}
	m, err := w.ResponseWriter.Write(b[half:])
	return n + m, err
}

var errStalled = errors.New("httpguardtest: the stall ended the answer")
