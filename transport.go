package httpguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// RetryPolicy configures a Retrier; NewRetrier copies it. Its zero value
// makes no retries (MaxRetries 0): start from DefaultRetryPolicy and change
// what you need. Every field's zero value is documented with the field.
type RetryPolicy struct {
	// MaxRetries is how many times a request is retried after its first
	// attempt: at most MaxRetries+1 attempts in all. 0 means no retries.
	MaxRetries int
	// BaseDelay, MaxDelay and Jitter shape the wait before each retry, as
	// Strategy says. By default the wait before retry n (0-based) is
	// min(BaseDelay·2^n, MaxDelay) ± Jitter. None may be negative, and
	// MaxDelay must not be less than BaseDelay; all zero means retries
	// without waiting (except for waits the server asks for).
	BaseDelay, MaxDelay, Jitter time.Duration
	// Strategy chooses the backoff formula; the zero value is
	// ExponentialJitter.
	Strategy BackoffStrategy
	// Backoff, if set, replaces Strategy; go-retryablehttp's Backoff
	// functions plug in here. nil means Strategy.
	Backoff BackoffFunc

	// Classify decides what is retried; nil means DefaultClassifier.
	// go-retryablehttp's CheckRetry functions plug in here. Whatever the
	// Classifier, the Retrier never retries the refusals of this package's
	// own layers (ErrRateLimited, ErrBudgetExceeded, ErrUnknownModel), and
	// it hands transport errors to the Classifier wrapped in a *url.Error,
	// as http.Client would, so go-retryablehttp's rules for them apply.
	Classify Classifier

	// MaxServerDelay caps the waits a server asks for (Retry-After,
	// retry-after-ms, rate-limit resets). The Retrier always waits at least
	// what the server asks; when that is longer than MaxServerDelay it does
	// not wait at all and returns the response at once. 0 means 60s.
	MaxServerDelay time.Duration
	// AttemptTimeout, if positive, bounds how long each attempt may wait
	// for its response headers; an attempt that times out fails with
	// ErrAttemptTimeout and is retried. Reading the body is not bounded, so
	// long streams are not cut. The caller's own context still bounds the
	// whole request. 0 means no bound per attempt.
	AttemptTimeout time.Duration

	// Budget bounds retries across all requests through the Retrier. Its
	// zero value is on, with defaults; see RetryBudget.
	Budget RetryBudget

	// MaxBufferedBody bounds how much of a request body without GetBody is
	// kept in memory to be sent again. A larger body is sent once, whole,
	// and not retried. 0 means DefaultMaxBufferedBody.
	MaxBufferedBody int64

	// OnRetry, if set, is called before each wait, from the goroutine that
	// runs the request. Requests run concurrently, so it must be safe for
	// concurrent use; it should return quickly, as the request waits for it.
	OnRetry func(RetryEvent)
	// Logger, if set, receives a debug record for each retry and an info
	// record when the Retrier gives up. Header values and URL queries are
	// never logged. nil means silent.
	Logger *slog.Logger
}

// DefaultRetryPolicy returns the policy of the HolySheep reference client:
// 5 retries, waits of 1s·2^n capped at 60s with ±500ms jitter, server waits
// honoured up to 60s, and the default retry budget.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxRetries: 5,
		BaseDelay:  time.Second,
		MaxDelay:   60 * time.Second,
		Jitter:     500 * time.Millisecond,
	}
}

const defaultMaxServerDelay = 60 * time.Second

// RetryEvent describes a retry about to happen, for RetryPolicy.OnRetry.
type RetryEvent struct {
	Request    *http.Request // the caller's request; do not modify it
	Attempt    int           // the attempt that failed, from 1
	Delay      time.Duration // the wait before the next attempt
	StatusCode int           // the failed attempt's status, 0 after a transport error
	Err        error         // the transport error, nil with a response
	Reason     error         // what the Classifier said
}

// Retrier is a Layer that retries requests as its RetryPolicy says. Create
// one with NewRetrier; the zero Retrier is not usable. Share it, since its
// retry budget is meant to span all the requests to a provider; one Retrier
// may wrap several transports, which then share its budget. A Retrier is
// safe for concurrent use by multiple goroutines.
//
// Giving up, it returns the last attempt's response as it came (its body
// whole and readable; see the package documentation for the X-Should-Retry
// header it adds), or the last transport error in a *RetryError.
type Retrier struct {
	p      RetryPolicy
	tokens *retryTokens
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
	// afterFunc is time.AfterFunc, for the AttemptTimeout.
	afterFunc func(d time.Duration, f func()) *time.Timer
}

// NewRetrier validates p and returns a Retrier that follows it, or an error
// (prefixed "httpguard: retry:") naming the invalid field.
func NewRetrier(p RetryPolicy) (*Retrier, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if p.Classify == nil {
		p.Classify = DefaultClassifier
	}
	if p.MaxServerDelay == 0 {
		p.MaxServerDelay = defaultMaxServerDelay
	}
	if p.MaxBufferedBody == 0 {
		p.MaxBufferedBody = DefaultMaxBufferedBody
	}
	return &Retrier{p: p, tokens: newRetryTokens(p.Budget), now: time.Now, sleep: sleepCtx, afterFunc: time.AfterFunc}, nil
}

func (p *RetryPolicy) validate() error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"BaseDelay", p.BaseDelay}, {"MaxDelay", p.MaxDelay}, {"Jitter", p.Jitter},
		{"MaxServerDelay", p.MaxServerDelay}, {"AttemptTimeout", p.AttemptTimeout}} {
		if f.v < 0 {
			return fmt.Errorf("httpguard: retry: %s must not be negative, got %v", f.name, f.v)
		}
	}
	switch {
	case p.MaxRetries < 0:
		return fmt.Errorf("httpguard: retry: MaxRetries must not be negative, got %d", p.MaxRetries)
	case p.MaxDelay < p.BaseDelay:
		return fmt.Errorf("httpguard: retry: MaxDelay (%v) must not be less than BaseDelay (%v)", p.MaxDelay, p.BaseDelay)
	case p.Strategy < ExponentialJitter || p.Strategy > DecorrelatedJitter:
		return fmt.Errorf("httpguard: retry: unknown Strategy %d", int(p.Strategy))
	case p.MaxBufferedBody < 0:
		return fmt.Errorf("httpguard: retry: MaxBufferedBody must not be negative, got %d", p.MaxBufferedBody)
	}
	return p.Budget.validate()
}

// Wrap returns a RoundTripper that sends each request through next
// (http.DefaultTransport when nil), retrying it as the policy says. It
// forwards CloseIdleConnections to next.
func (r *Retrier) Wrap(next http.RoundTripper) http.RoundTripper {
	if r == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	return &retryTransport{r: r, next: orDefault(next)}
}

type retryTransport struct {
	r    *Retrier
	next http.RoundTripper
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *retryTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

// RoundTrip implements the attempt loop. It returns the first response that
// is not worth retrying, or, on giving up, the last response (marked
// X-Should-Retry: false) or the last transport error in a *RetryError.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r, p := t.r, &t.r.p
	ctx := req.Context()
	canRewind := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !canRewind && p.MaxRetries > 0 {
		var err error
		if req, _, err = replayable(req, p.MaxBufferedBody); err == nil {
			canRewind = true
		} else if err != errBodyTooLarge {
			return nil, &RetryError{Attempts: 0, Err: err}
		}
	}

	var prevDelay time.Duration
	for attempt := 1; ; attempt++ {
		areq := req
		if attempt > 1 {
			var err error
			if areq, err = rewound(req); err != nil {
				return nil, &RetryError{Attempts: attempt - 1, Err: err}
			}
		}
		var cancel context.CancelFunc
		var timer *attemptTimer
		if p.AttemptTimeout > 0 {
			var actx context.Context
			actx, cancel = context.WithCancel(ctx)
			timer = startAttemptTimer(r.afterFunc, p.AttemptTimeout, cancel)
			areq = areq.WithContext(context.WithValue(actx, attemptTimerKey{}, timer))
		}
		resp, err := t.next.RoundTrip(areq)
		if timer != nil && timer.stop() && ctx.Err() == nil {
			// The timer fired: even a response that raced it in has a
			// cancelled body.
			discard(resp)
			resp, err = nil, fmt.Errorf("%w (%v)", ErrAttemptTimeout, p.AttemptTimeout)
		}

		retry, reason := classify(ctx, p.Classify, resp, err, req)
		if !retry {
			if resp != nil {
				r.tokens.succeeded()
			}
			return finish(resp, err, attempt, cancel)
		}
		r.tokens.failed()

		stop := ""
		var delay time.Duration
		switch {
		case attempt > p.MaxRetries:
			stop = "retries exhausted"
		case !canRewind:
			stop = "request body cannot be replayed"
		case !r.tokens.allow():
			stop = "retry budget spent"
		default:
			delay = p.backoff(attempt-1, prevDelay, resp)
			if resp != nil {
				sd, ok := serverDelay(resp, r.now())
				if ok && sd > p.MaxServerDelay {
					stop = "server asked for a wait longer than MaxServerDelay"
				}
				delay = max(delay, sd)
			}
			if dl, ok := ctx.Deadline(); ok && stop == "" && r.now().Add(delay).After(dl) {
				stop = "wait would pass the context deadline"
			}
		}
		if stop != "" {
			t.log(slog.LevelInfo, "httpguard: giving up", req, attempt, delay, resp, err, reason, stop)
			return finish(resp, err, attempt, cancel)
		}
		if p.OnRetry != nil {
			p.OnRetry(RetryEvent{Request: req, Attempt: attempt, Delay: delay, StatusCode: statusOf(resp), Err: err, Reason: reason})
		}
		t.log(slog.LevelDebug, "httpguard: retrying", req, attempt, delay, resp, err, reason, "")
		discard(resp)
		if cancel != nil {
			cancel()
		}
		if err := r.sleep(ctx, delay); err != nil {
			return nil, &RetryError{Attempts: attempt, Err: err}
		}
		prevDelay = delay
	}
}

// rewound returns a shallow copy of req with a fresh body from GetBody.
func rewound(req *http.Request) (*http.Request, error) {
	if req.GetBody == nil {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("httpguard: retry: GetBody: %w", err)
	}
	r := *req
	r.Body = body
	return &r, nil
}

// serverDelay is the wait a retryable response asks for: Retry-After and
// retry-after-ms, else the reset of a rate-limit window the response
// reports as spent.
func serverDelay(resp *http.Response, now time.Time) (time.Duration, bool) {
	if d, ok := retryAfter(resp.Header, now); ok {
		return d, true
	}
	return parseRateLimit(resp.Header, now).exhaustedWait()
}

// finish hands the outcome of the last attempt to the caller.
func finish(resp *http.Response, err error, attempts int, cancel context.CancelFunc) (*http.Response, error) {
	if err != nil {
		if cancel != nil {
			cancel()
		}
		return nil, &RetryError{Attempts: attempts, Err: err}
	}
	if sdkWouldRetry(resp.StatusCode) || resp.Header.Get("X-Should-Retry") == "true" {
		// Stainless SDKs (openai-go, anthropic-sdk-go) retry these statuses,
		// and any response saying x-should-retry: true, again on top of us;
		// this header tells them the retrying is done.
		if resp.Header == nil {
			resp.Header = make(http.Header)
		}
		resp.Header.Set("X-Should-Retry", "false")
	}
	switch {
	case cancel == nil:
	case resp.Body == nil: // nothing to read: the attempt is over
		cancel()
	default:
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	}
	return resp, nil
}

// ErrAttemptTimeout is the error of an attempt that did not receive its
// response headers within RetryPolicy.AttemptTimeout. DefaultClassifier
// retries it; when it ends the last attempt, the Retrier returns it wrapped
// in a *RetryError (which net/http wraps in a *url.Error), so test for it
// with errors.Is. It reports Timeout() true, like net/http's own timeouts,
// so code that checks for a net.Error timeout sees it as one.
var ErrAttemptTimeout error = attemptTimeoutError{}

type attemptTimeoutError struct{}

func (attemptTimeoutError) Error() string   { return "attempt timed out" }
func (attemptTimeoutError) Timeout() bool   { return true }
func (attemptTimeoutError) Temporary() bool { return true }

// RetryError is the error a Retrier returns when its last attempt ended in a
// transport error (or the request could not be prepared). Unwrap reaches
// the cause, so errors.Is(err, context.DeadlineExceeded) and errors.As work.
// When the last attempt got a response, however bad its status, the
// Retrier returns that response, not a RetryError; a RetryError means the
// last attempt got none, or the caller's context ended during a wait.
type RetryError struct {
	Attempts int   // how many attempts were sent; 0 when none could be
	Err      error // the last attempt's error
}

// Error reports the number of attempts and the last error.
func (e *RetryError) Error() string {
	return fmt.Sprintf("httpguard: retry: after %d attempt(s): %v", e.Attempts, e.Err)
}

// Unwrap returns the last attempt's error.
func (e *RetryError) Unwrap() error { return e.Err }

// Timeout reports whether the last attempt's error is a timeout, such as
// ErrAttemptTimeout or context.DeadlineExceeded. http.Client's *url.Error
// asks only the error it wraps directly, this one.
func (e *RetryError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// cancelBody ends an attempt's context once the caller is done with the
// body, as http.Client does for its Timeout.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.cancel()
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// maxDrain bounds how much of a discarded response is read so that its
// connection can be reused; a longer body is closed instead.
const maxDrain = 64 << 10

func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
}

// sdkWouldRetry reports whether a Stainless-generated SDK retries status.
func sdkWouldRetry(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusConflict ||
		status == http.StatusTooManyRequests || status >= 500
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *retryTransport) log(level slog.Level, msg string, req *http.Request, attempt int, delay time.Duration, resp *http.Response, err, reason error, stop string) {
	l := t.r.p.Logger
	if l == nil || !l.Enabled(req.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("url", redactURL(req.URL)),
		slog.Int("attempt", attempt),
		slog.Int("status", statusOf(resp)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	if reason != nil {
		attrs = append(attrs, slog.String("reason", reason.Error()))
	}
	if stop != "" {
		attrs = append(attrs, slog.String("stop", stop))
	} else {
		attrs = append(attrs, slog.Duration("delay", delay))
	}
	l.LogAttrs(req.Context(), level, msg, attrs...)
}

// redactURL drops userinfo and the query, where some APIs put keys.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User, c.RawQuery, c.ForceQuery = nil, "", false
	return c.String()
}
