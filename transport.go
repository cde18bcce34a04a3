package httpguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// MaxDelay must not be less than BaseDelay. The first retry of an
	// attempt whose connection ended before any byte of an answer (an EOF
	// or a reset, as when a server's idle timeout closes a kept-alive
	// connection just as the request goes out) does not wait: net/http
	// sends a GET so lost again at once itself. The Retrier does not ask
	// whether the connection was a reused one, so a new connection's reset
	// is retried at once too, once a request. Retries that would never
	// wait (BaseDelay 0, and no Jitter for ExponentialJitter to add) are an
	// error unless Backoff is set: they would hit a failing server in a
	// tight loop.
	BaseDelay, MaxDelay, Jitter time.Duration
	// Strategy chooses the backoff formula; the zero value is
	// ExponentialJitter.
	Strategy BackoffStrategy
	// Backoff, if set, replaces Strategy; go-retryablehttp's Backoff
	// functions plug in here. nil means Strategy. When the response asks
	// for a wait, a wait it returns longer than both MaxDelay and
	// MaxServerDelay is not started (it followed the server past the cap):
	// the response comes back at once, as for a server's wait over
	// MaxServerDelay.
	Backoff BackoffFunc

	// Classify decides what is retried; nil means DefaultClassifier.
	// go-retryablehttp's CheckRetry functions plug in here. Whatever the
	// Classifier, the Retrier never retries a refusal of a layer below
	// (IsRefusal: ErrRateLimited, ErrBudgetExceeded, ...) nor counts it as
	// an attempt, and it hands transport errors to the Classifier wrapped
	// in a *url.Error, as http.Client would, so go-retryablehttp's rules
	// for them apply.
	Classify Classifier

	// MaxServerDelay caps the waits a server asks for (Retry-After,
	// retry-after-ms, rate-limit resets). The Retrier always waits at least
	// what the server asks; when that is longer than MaxServerDelay it does
	// not wait at all and returns the response at once. 0 means 60s.
	MaxServerDelay time.Duration
	// AttemptTimeout, if positive, bounds how long each attempt may wait
	// for its response headers; an attempt that times out fails with
	// ErrAttemptTimeout and is retried. Reading the body is not bounded, so
	// long streams are not cut; nor is writing the request's body, as for
	// net/http's ResponseHeaderTimeout, so slow uploads are not cut either.
	// The caller's own context still bounds the whole request. 0 means no
	// bound per attempt.
	AttemptTimeout time.Duration

	// RetryBudget bounds retries across all requests through the Retrier,
	// by how likely a retry is to succeed. Its zero value is on, with
	// defaults; see RetryBudget.
	RetryBudget RetryBudget

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

// RetryEvent describes a retry about to happen, for RetryPolicy.OnRetry. It
// is a plain value, but Request is the caller's, shared with the request
// still running.
type RetryEvent struct {
	Request    *http.Request // the caller's request; do not modify it
	Attempt    int           // the attempt that failed, from 1
	Delay      time.Duration // the wait before the next attempt
	StatusCode int           // the failed attempt's status, 0 after a transport error
	Err        error         // the transport error, nil with a response
	Reason     error         // what the Classifier said
}

// Retrier is a Layer that retries requests as its RetryPolicy says. Create
// one with NewRetrier; the zero Retrier is not usable: its Wrap fails every
// request, unsent, naming the constructor. Share it, since its retry budget
// is meant to span all the requests to a provider; one Retrier may wrap
// several transports, which then share its budget. A Retrier is safe for
// concurrent use by multiple goroutines.
//
// Giving up, it returns the last attempt's response as it came (its body
// whole and readable; see the package documentation for the X-Should-Retry
// header it adds), or the last transport error in a *RetryError.
//
// A transport may go on reading an attempt's body after its RoundTrip
// returned (net/http writes it on while a server that answered early, with
// a 503 or a 413, reads), and some SDKs' GetBody rewinds and hands out the
// very reader being written (openai-go's, anthropic-sdk-go's). So a retry
// calls GetBody only once the transport below has closed the attempt's body
// and no Read of it is under way; a body still read 5s after the attempt
// ends the request instead, with the answer that attempt had (read whole
// first), or an error when it had none whole. Bodies from http.NewRequest,
// whose GetBody hands out new readers, are not waited for. It may also go
// on reading an attempt's header and URL (net/http's HTTP/2 writer, for a
// stream whose attempt timed out), so each retry goes down as a copy of the
// request with a header and a URL of its own, which a layer below may set
// without writing what an earlier attempt is read from.
type Retrier struct {
	p      RetryPolicy // validated, defaults filled in
	budget *retryBudget
	// defaultClassify is set when p.Classify is DefaultClassifier, by
	// default: see keepsAnswer.
	defaultClassify bool
	now             func() time.Time
	sleep           func(ctx context.Context, d time.Duration) error
	// afterFunc is time.AfterFunc, for the AttemptTimeout and the bound on
	// draining a discarded response.
	afterFunc func(d time.Duration, f func()) *time.Timer
}

// NewRetrier validates p and returns a Retrier that follows it, or an error
// (prefixed "httpguard: retry:") naming the invalid field.
func NewRetrier(p RetryPolicy) (*Retrier, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	defaultClassify := p.Classify == nil
	p = p.withDefaults()
	return &Retrier{p: p, budget: newRetryBudget(p.RetryBudget), defaultClassify: defaultClassify,
		now: time.Now, sleep: sleepCtx, afterFunc: time.AfterFunc}, nil
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
		return fmt.Errorf("httpguard: retry: Strategy must be ExponentialJitter, FullJitter or DecorrelatedJitter, got %d", int(p.Strategy))
	case p.MaxRetries > 0 && p.Backoff == nil && p.BaseDelay == 0 && (p.Jitter == 0 || p.Strategy != ExponentialJitter):
		return fmt.Errorf("httpguard: retry: BaseDelay is 0, so the %d retries would not wait: "+
			"set BaseDelay and MaxDelay (DefaultRetryPolicy has 1s and 60s) or a Backoff", p.MaxRetries)
	case p.MaxBufferedBody < 0:
		return fmt.Errorf("httpguard: retry: MaxBufferedBody must not be negative, got %d", p.MaxBufferedBody)
	}
	return p.RetryBudget.validate()
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Classify == nil {
		p.Classify = DefaultClassifier
	}
	if p.MaxServerDelay == 0 {
		p.MaxServerDelay = defaultMaxServerDelay
	}
	if p.MaxBufferedBody == 0 {
		p.MaxBufferedBody = DefaultMaxBufferedBody
	}
	p.RetryBudget = p.RetryBudget.withDefaults()
	return p
}

// Wrap returns a RoundTripper that sends each request through next
// (http.DefaultTransport when nil), retrying it as the policy says. It
// forwards CloseIdleConnections to next.
func (r *Retrier) Wrap(next http.RoundTripper) http.RoundTripper {
	if r == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	if r.p.Classify == nil { // NewRetrier sets it
		return zeroRetrier
	}
	t := &retryTransport{r: r, next: orDefault(next), gate: true}
	switch n := t.next.(type) {
	case *budgetTransport:
		// A Budget right below (the recommended order) keeps net/http
		// from sending a priced attempt again on its own (sendOnce), in the
		// copy of the request it makes anyway; told to, it gates what it
		// passes unpriced too (see resendGate), which spares each attempt
		// the Retrier's own copy of its request.
		t.next, t.gate = gatingPass(n), false
	case *breakerTransport:
		// So does a Budget right below a Breaker (Retrier → Breaker →
		// Budget), which passes each attempt down with its GetBody. The
		// Retrier's gate would take the Budget's read of the Body, to
		// price it, for the Body sent, and fail net/http's resend of a
		// stream the server turned away unread (REFUSED_STREAM, a GOAWAY
		// below it): an error the Breaker would count as a failure, and a
		// retry after a backoff.
		if b, ok := n.next.(*budgetTransport); ok {
			c := *n
			c.next = gatingPass(b)
			t.next, t.gate = &c, false
		}
	}
	return t
}

// gatingPass returns a copy of b that gates what it passes unpriced
// (see budgetTransport.gatePass).
func gatingPass(b *budgetTransport) *budgetTransport {
	c := *b
	c.gatePass = true
	return &c
}

type retryTransport struct {
	r    *Retrier
	next http.RoundTripper
	gate bool // send each attempt down behind a resendGate
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *retryTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

// RoundTrip implements the attempt loop. It returns the first response that
// is not worth retrying, or, on giving up, the last response or the last
// transport error in a *RetryError. Every response it returns is marked
// X-Should-Retry: false.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r, p := t.r, &t.r.p
	if req.URL == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &RetryError{Err: Refuse(errNoURL)}
	}
	ctx := req.Context()
	if ctx.Err() != nil { // nothing can be sent, as net/http would say
		closeRequestBody(req)
		return nil, &RetryError{Err: Refuse(context.Cause(ctx))}
	}
	// A GetBody of the caller's other than http.NewRequest's may hand out
	// the very reader its Body reads (see sentBody): the attempts' bodies
	// are then tracked, so that no GetBody runs while the transport below
	// still reads one.
	track := req.GetBody != nil && req.Body != nil && req.Body != http.NoBody && !freshGetBody(req.GetBody)
	canRewind := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !canRewind && p.MaxRetries > 0 {
		var err error
		if req, _, err = replayableCtx(req, p.MaxBufferedBody); err == nil {
			canRewind = true
		} else if err != errBodyTooLarge {
			return nil, &RetryError{Err: Refuse(err)}
		}
	}

	var prevDelay time.Duration
	var sent *attemptRequest // the attempt's request, when its body is tracked
	var next *http.Request   // the next attempt's request, from rewound
	var nextSent *attemptRequest
	for attempt := 1; ; attempt++ {
		areq := req
		switch {
		case attempt > 1:
			areq, sent = next, nextSent
		case track:
			sent = newAttemptRequest(req, req.Body, t.gate)
			areq = &sent.req
		case t.gate:
			areq = gated(req, req.Body)
		}
		var resp *http.Response
		var err error
		var cancel context.CancelCauseFunc // ends a timed attempt's context, called with nil: see sendTimed
		if p.AttemptTimeout > 0 || bodiless(areq) {
			resp, cancel, err = t.sendTimed(ctx, areq)
		} else {
			resp, err = t.next.RoundTrip(areq)
		}
		if err != nil && resp != nil {
			// A RoundTripper returns a response or an error, never both:
			// http.Client ignores such a response, and so does the Retrier,
			// but closes it, since no one else will, and reads nothing
			// from it (no Retry-After, no status).
			ignore(resp)
			resp = nil
		}
		switch {
		case err != nil && refusedBelow(ctx, err):
			// Nothing of this attempt was sent: it is not an attempt, and
			// the retry it was to be gives its turn back.
			if attempt > 1 {
				r.budget.refund()
			}
			return finish(nil, nil, err, attempt-1, cancel)
		case err != nil && isFinal(err): // sent, and not to be sent again
			return finish(nil, nil, err, attempt, cancel)
		case resp == nil && err == nil:
			return finish(nil, nil, fmt.Errorf("%T returned neither a response nor an error", t.next), attempt, cancel)
		case err != nil && attempt == 1:
			// lengthError reads a GetBody copy: not while the body is read.
			if sent.released(ctx, r.afterFunc) == nil {
				if longer, lerr := lengthError(req); longer {
					// net/http's HTTP/1 writes the declared bytes before it
					// reads the extra ones: a server has the request whole
					// once the body outgrows net/http's write buffer (4 KB).
					// Sent, then, and not to be sent again.
					return finish(nil, nil, lerr, attempt, cancel)
				} else if lerr != nil {
					// A body that ended before its declared length was
					// never a whole request: refused, as a body without
					// GetBody is before sending.
					return finish(nil, nil, Refuse(lerr), 0, cancel)
				}
			}
			if unsendableBelow(ctx, err) { // nothing was sent, nor will be
				return finish(nil, nil, Refuse(err), 0, cancel)
			}
		}

		retry, reason := false, error(nil) // a reason is read only for a retry
		// The caller's own end, by its context or its Cancel channel
		// (deprecated, still honoured by net/http), is not retried, and
		// says nothing of the server.
		live := !cancelClosed(req)
		if live && !r.keepsAnswer(resp, err) {
			retry, reason = classify(ctx, p.Classify, resp, err, req)
		}
		// A first attempt whose connection was lost unanswered is most
		// likely a kept-alive connection's race (see droppedUnanswered):
		// it says nothing of the provider, whose outage fails the retry
		// on a new connection too, which counts; and its retry goes at once.
		raced := err != nil && attempt == 1 && droppedUnanswered(err)
		if live && ctx.Err() == nil && !raced {
			r.budget.record(!retry)
		}
		if attempt == 1 {
			r.budget.earn()
		}
		if !retry {
			return finish(sent, resp, err, attempt, cancel)
		}
		delay, stop := t.wait(ctx, attempt, prevDelay, resp, raced, canRewind)
		if stop != "" {
			t.log(slog.LevelInfo, "httpguard: giving up", req, attempt, delay, resp, err, reason, stop)
			return finish(sent, resp, err, attempt, cancel)
		}
		discardedBelow(ctx, resp, err) // a Budget above sends no more on its reservation what may be billed
		// The next attempt's body, from GetBody, before this answer is
		// discarded and the wait begins: a GetBody that fails ends the
		// request with this answer, at once. A body the transport below
		// still holds is rewound only once it is done (see sentBody).
		held := sent.held()
		next, nextSent = nil, nil
		var gerr error
		if !held {
			next, nextSent, gerr = rewound(req, track, t.gate)
		}
		if gerr != nil {
			r.budget.refund()
			t.log(slog.LevelInfo, "httpguard: giving up", req, attempt, delay, resp, err, reason, gerr.Error())
			return finish(sent, resp, err, attempt, cancel)
		}
		if p.OnRetry != nil {
			p.OnRetry(RetryEvent{Request: req, Attempt: attempt, Delay: delay, StatusCode: statusOf(resp), Err: err, Reason: reason})
		}
		t.log(slog.LevelDebug, "httpguard: retrying", req, attempt, delay, resp, err, reason, "")
		var kept *http.Response // the answer, should the retry not be sent
		if held {
			kept = r.keep(resp)
		} else {
			r.discard(resp)
		}
		if cancel != nil {
			cancel(nil)
		}
		wctx, endWait := withCancelChannel(ctx, req.Cancel)
		serr := r.sleep(wctx, delay)
		endWait()
		if serr != nil {
			r.budget.refund()
			if next != nil {
				closeRequestBody(next)
			}
			return nil, &RetryError{Attempts: attempt, Err: serr}
		}
		if err := sent.released(ctx, r.afterFunc); err != nil {
			r.budget.refund()
			if kept != nil && err == errBodyStillRead {
				t.log(slog.LevelWarn, "httpguard: giving up", req, attempt, 0, kept, nil, reason, err.Error())
				return finish(sent, kept, nil, attempt, nil)
			}
			return nil, &RetryError{Attempts: attempt, Err: err}
		}
		if ctx.Err() != nil {
			// It ended as the wait did (a deadline at the wait's end, a
			// cancel): net/http would send nothing, and the retry that
			// is not sent is no attempt.
			r.budget.refund()
			if next != nil {
				closeRequestBody(next)
			}
			return nil, &RetryError{Attempts: attempt, Err: contextEnd(ctx)}
		}
		if held { // one that fails ends the request with the answer kept, if any
			if next, nextSent, gerr = rewound(req, track, t.gate); gerr != nil {
				r.budget.refund()
				t.log(slog.LevelInfo, "httpguard: giving up", req, attempt, 0, kept, err, reason, gerr.Error())
				if kept != nil || err != nil {
					return finish(sent, kept, err, attempt, nil)
				}
				return nil, &RetryError{Attempts: attempt, Err: gerr}
			}
		}
		prevDelay = delay
	}
}

// sendTimed sends one attempt under its AttemptTimeout, if any, and, when
// it has no body, under a resendWatch. cancel ends the attempt's context:
// call it once done with the response.
func (t *retryTransport) sendTimed(ctx context.Context, req *http.Request) (resp *http.Response, cancel context.CancelCauseFunc, err error) {
	r := t.r
	actx, cancel := context.WithCancelCause(ctx)
	var timer *attemptTimer
	trace := &httptrace.ClientTrace{}
	if r.p.AttemptTimeout > 0 {
		timer = startAttemptTimer(r.afterFunc, r.p.AttemptTimeout, cancel)
		actx, trace = context.WithValue(actx, attemptTimerKey{}, timer), &timer.trace
	}
	if bodiless(req) {
		w := &resendWatch{cancel: cancel, wrote: trace.WroteHeaders}
		trace.GotConn, trace.WroteHeaders = w.gotConn, w.wroteHeaders
	}
	resp, err = t.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(actx, trace)))
	switch {
	// A refusal stands, unless the timer's cancel caused it (a layer below
	// gave up when the attempt's context ended, in a store call say).
	case timer != nil && timer.stop() && ctx.Err() == nil && !(err != nil && IsRefusal(err) && !errors.Is(err, context.Canceled)):
		// The timer fired: even a response that raced it in has a
		// cancelled body.
		if resp != nil {
			discardedBelow(ctx, resp, nil) // a 2xx is billed, though cut
		}
		r.discard(resp)
		resp, err = nil, fmt.Errorf("%w (%v)", ErrAttemptTimeout, r.p.AttemptTimeout)
	case ctx.Err() == nil && context.Cause(actx) == errSentBelow:
		r.discard(resp)
		resp, err = nil, errSentBelow
	}
	return resp, cancel, err
}

// bodiless reports whether req has no body: net/http sends such a request
// again without asking its GetBody, which a resendGate would refuse.
func bodiless(req *http.Request) bool { return req.Body == nil || req.Body == http.NoBody }

// resendWatch ends an attempt without a body once net/http begins to send
// it a third time on its own. net/http sends a request again at once when
// its kept-alive connection turns out dead, or a GOAWAY came before its
// stream: once. But when its HTTP/2 stream is reset with PROTOCOL_ERROR
// (a server rejecting one of its headers does so), it sends it again on a
// new connection each time, at once and without end (the reset marks the
// connection not to be reused, and a request that finds no connection to
// reuse is sent again): thousands of requests a second, which the
// Retrier's MaxRetries, waits and retry budget would never see, and which
// the AttemptTimeout, started again by each send, would not end. The
// attempt fails with errSentBelow instead, retried as any other transport
// error. A body's resendGate does this for a request with a body.
type resendWatch struct {
	cancel context.CancelCauseFunc
	wrote  func() // the trace's WroteHeaders hook before the watch's, if any
	writes atomic.Int32
}

// maxOwnSends is how many times net/http may send one attempt on its own.
const maxOwnSends = 2

// wroteHeaders, the attempt's httptrace hook, counts the sends begun.
func (w *resendWatch) wroteHeaders() {
	if w.wrote != nil {
		w.wrote()
	}
	w.writes.Add(1)
}

// gotConn, the attempt's httptrace hook, ends the attempt before a send
// when maxOwnSends began already: net/http gets a connection before each.
func (w *resendWatch) gotConn(httptrace.GotConnInfo) {
	if w.writes.Load() >= maxOwnSends {
		w.cancel(errSentBelow)
	}
}

// sendBounded sends req to next so that net/http sends it at most as a
// Retrier's attempt: a request with a body behind a resendGate (gated),
// unless its GetBody is one already (a Retrier's, or a Budget's that
// priced it, above); one without a body under a resendWatch, unless a
// Retrier above watches it already. A layer that paces or counts sends
// calls it, so that the sends net/http would make on its own below it
// (thousands a second to a server resetting every HTTP/2 stream with
// PROTOCOL_ERROR) are not made past it when no Retrier is above: the
// request fails with errSentBelow instead, which a Retrier above retries
// under its policy.
func sendBounded(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	if !bodiless(req) {
		if req.GetBody == nil || gatedGetBody(req.GetBody) {
			return next.RoundTrip(req)
		}
		return next.RoundTrip(gated(req, req.Body))
	}
	ctx := req.Context()
	if t := httptrace.ContextClientTrace(ctx); t != nil && t.GotConn != nil && reflect.ValueOf(t.GotConn).Pointer() == watchCode {
		return next.RoundTrip(req)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w := &resendWatch{cancel: cancel}
	trace := &httptrace.ClientTrace{GotConn: w.gotConn, WroteHeaders: w.wroteHeaders}
	resp, err := next.RoundTrip(req.WithContext(httptrace.WithClientTrace(wctx, trace)))
	switch {
	case ctx.Err() == nil && context.Cause(wctx) == errSentBelow:
		if resp != nil {
			ignore(resp)
		}
		cancel(nil)
		return nil, errSentBelow
	case err != nil || resp == nil || resp.Body == nil:
		cancel(nil)
	default:
		cancelOnClose(resp, cancel)
	}
	return resp, err
}

// boundsResends reports whether the layers over next bound the sends
// net/http makes again on its own (see sendBounded): next is net/http's
// Transport, which makes them. Over another transport they pass requests
// down as they are.
func boundsResends(next http.RoundTripper) bool {
	_, ok := next.(*http.Transport)
	return ok
}

// sendDown is how a layer that paces or counts sends sends req to next:
// through sendBounded when bound (see boundsResends).
func sendDown(next http.RoundTripper, bound bool, req *http.Request) (*http.Response, error) {
	if bound {
		return sendBounded(next, req)
	}
	return next.RoundTrip(req)
}

// watchCode is the code of a resendWatch's GotConn hook, which tells a
// request a Retrier above watches already.
var watchCode = reflect.ValueOf((&resendWatch{}).gotConn).Pointer()

// wait returns how long to wait before retrying the attempt that just
// failed with resp (none at once when raced: a first attempt lost to a
// kept-alive connection's race), or, in stop, why it is not retried. A
// retry it allows has taken its turn from the retry budget.
func (t *retryTransport) wait(ctx context.Context, attempt int, prev time.Duration, resp *http.Response, raced, canRewind bool) (delay time.Duration, stop string) {
	r, p := t.r, &t.r.p
	switch {
	case attempt > p.MaxRetries:
		return 0, "retries exhausted"
	case !canRewind:
		return 0, "request body cannot be replayed"
	}
	if raced {
		delay = 0
	} else {
		delay = p.backoff(attempt-1, prev, resp)
	}
	if p.Backoff != nil && delay > max(p.MaxDelay, p.MaxServerDelay) && resp != nil && hasServerWait(resp.Header) {
		// go-retryablehttp's DefaultBackoff passes a server's Retry-After
		// through, uncapped; a Backoff that grows by itself (as its
		// LinearJitterBackoff does) is the caller's choice.
		return delay, "Backoff followed a server wait longer than MaxServerDelay"
	}
	if resp != nil {
		sd, ok := serverWait(resp.Header, r.now())
		if ok && sd > p.MaxServerDelay {
			return sd, "server asked for a wait longer than MaxServerDelay"
		}
		delay = max(delay, sd)
	}
	if dl, ok := ctx.Deadline(); ok && r.now().Add(delay).After(dl) {
		return delay, "wait would pass the context deadline"
	}
	if !r.budget.take() {
		return delay, "retry budget spent"
	}
	return delay, ""
}

// rewound returns a shallow copy of req for a new attempt, with a fresh
// body from GetBody, tracked when track is set and behind a resendGate
// when gate is, and a header and URL of its own: each attempt is its own
// request to the layers below. The transport may still read an earlier
// attempt's request (net/http's HTTP/2 writer goes on with a stream whose
// attempt timed out), which a layer below that sets a header on each
// attempt, as many authentication layers do, or rewrites its URL, would
// otherwise write as it is read.
func rewound(req *http.Request, track, gate bool) (*http.Request, *attemptRequest, error) {
	var body io.ReadCloser
	if req.GetBody != nil {
		var err error
		if body, err = callGetBody(req.GetBody); err != nil {
			return nil, nil, fmt.Errorf("GetBody: %w", err)
		}
	}
	var next *http.Request
	var a *attemptRequest
	switch {
	case track && body != nil:
		a = newAttemptRequest(req, body, gate)
		next = &a.req
	case body != nil && gate:
		next = gated(req, body)
	default:
		r := *req
		if body != nil {
			r.Body = body
		}
		next = &r
	}
	if next == req { // gated returns req when GetBody gave its Body back
		r := *req
		next = &r
	}
	next.Header = req.Header.Clone()
	if req.URL != nil {
		u := *req.URL
		next.URL = &u
	}
	return next, a, nil
}

// attemptRequest is the request of an attempt whose body is tracked, with
// that body and its resendGate, in one allocation.
type attemptRequest struct {
	req  http.Request
	body sentBody
	gate resendGate
}

// newAttemptRequest returns a copy of req that sends body, tracked, behind
// a resendGate when gate is set.
func newAttemptRequest(req *http.Request, body io.ReadCloser, gate bool) *attemptRequest {
	a := &attemptRequest{req: *req, body: sentBody{rc: body}}
	a.req.Body = &a.body
	if gate && req.GetBody != nil {
		a.gate.getBody = req.GetBody
		a.body.gate = &a.gate
		a.req.GetBody = a.gate.get
	}
	return a
}

// gatedRequest is the request of an attempt whose body is not tracked,
// with its resendGate, in one allocation.
type gatedRequest struct {
	req  http.Request
	gate resendGate
}

// gated returns a request that sends req with body, an in-memory reader,
// behind a resendGate: a copy, unless it has no body or no GetBody
// (net/http cannot send it again), which is req itself when body is req's.
// Any other body is tracked (see newAttemptRequest).
func gated(req *http.Request, body io.ReadCloser) *http.Request {
	if req.GetBody == nil || body == nil || body == http.NoBody {
		if body == req.Body {
			return req
		}
		r := *req
		r.Body = body
		return &r
	}
	unread, ok := inMemory(body)
	if !ok {
		return &newAttemptRequest(req, body, true).req
	}
	g := &gatedRequest{req: *req, gate: resendGate{getBody: req.GetBody, unread: unread, size: unread.Len()}}
	g.req.Body = body
	if freshGetBody(req.GetBody) {
		g.req.GetBody = g.gate.getFresh
	} else {
		g.req.GetBody = g.gate.get
	}
	return &g.req
}

// held reports whether the transport below may still read the attempt's
// body: not closed yet, or a Read under way. A body not tracked is not.
func (a *attemptRequest) held() bool {
	if a == nil {
		return false
	}
	a.body.mu.Lock()
	defer a.body.mu.Unlock()
	return !a.body.use.done()
}

// released waits until the transport below is done with the attempt's
// body (see sentBody.wait); at once when a is nil, a body not tracked.
func (a *attemptRequest) released(ctx context.Context, afterFunc func(time.Duration, func()) *time.Timer) error {
	if a == nil {
		return nil
	}
	return a.body.wait(ctx, afterFunc)
}

// finish hands the outcome of the last attempt, sent as a when its body
// was tracked, to the caller.
func finish(a *attemptRequest, resp *http.Response, err error, attempts int, cancel context.CancelCauseFunc) (*http.Response, error) {
	if err != nil {
		if cancel != nil {
			cancel(nil)
		}
		return nil, &RetryError{Attempts: attempts, Err: err}
	}
	// Stainless SDKs (openai-go, anthropic-sdk-go) retry on top of us: the
	// statuses they retry, a response saying x-should-retry: true, and
	// (anthropic-sdk-go, which reads the body inside its attempt) a 2xx
	// whose body breaks off while read, which the provider has billed.
	// This header tells them the retrying is done, whatever the answer.
	if resp.Header == nil {
		resp.Header = make(http.Header)
	}
	resp.Header["X-Should-Retry"] = falseValue()
	switch {
	case cancel == nil:
	case resp.Body == nil: // nothing to read: the attempt is over
		cancel(nil)
	default:
		cancelOnClose(resp, cancel)
	}
	return resp, nil
}

// falseValue returns a header value of its own, "false", without an
// allocation of its own: it is cut from a slab of such values, as
// net/textproto cuts a message's header values from one slice. Each value
// is a slice of one element and capacity one, so that a caller who
// changes it in place changes only its own, and one who appends to it
// gets a new array. The slabs are in a sync.Pool, which keeps one for each
// P: goroutines on different CPUs cut from different slabs, without a
// count they all write.
func falseValue() []string {
	s := falseSlabs.Get().(*falseSlab)
	if s.taken == len(s.values) {
		s = newFalseSlab()
	}
	i := s.taken
	s.taken++
	falseSlabs.Put(s)
	return s.values[i : i+1 : i+1]
}

// falseSlab is a slab of falseValue's values: 31 and their count fit in
// 512 bytes, the largest size class without a header, and keep what one
// value a caller keeps can hold alive small. Its owner is whoever took it
// from falseSlabs.
type falseSlab struct {
	values [31]string
	taken  int
}

func newFalseSlab() *falseSlab {
	s := &falseSlab{}
	for i := range s.values {
		s.values[i] = "false"
	}
	return s
}

// falseSlabs holds the slabs falseValue cuts values from.
var falseSlabs = sync.Pool{New: func() any { return newFalseSlab() }}

// ErrAttemptTimeout is the error of an attempt that did not receive its
// response headers within RetryPolicy.AttemptTimeout. DefaultClassifier
// retries it; when it ends the last attempt, the Retrier returns it wrapped
// in a *RetryError (which net/http wraps in a *url.Error), so test for it
// with errors.Is. It reports Timeout() true, like net/http's own timeouts,
// so code that checks for a net.Error timeout sees it as one.
var ErrAttemptTimeout error = attemptTimeoutError{}

type attemptTimeoutError struct{}

// errAttemptTimedOut is the cause the attempt timer cancels an attempt's
// context with, so that the layers below the Retrier see the attempt fail
// in ErrAttemptTimeout, as the policy says, and not in a bare
// context.Canceled, which reads as the caller's own doing (otelguard's
// Attempts counted timeouts as error.type=canceled). It is still
// context.Canceled too: what ended the attempt was its context.
var errAttemptTimedOut = fmt.Errorf("%w: %w", ErrAttemptTimeout, context.Canceled)

func (attemptTimeoutError) Error() string   { return "attempt timed out" }
func (attemptTimeoutError) Timeout() bool   { return true }
func (attemptTimeoutError) Temporary() bool { return true }

// RetryError is the error a Retrier returns when its last attempt ended in a
// transport error, or when no attempt could be sent. Unwrap reaches the
// cause, so errors.Is(err, context.DeadlineExceeded) and errors.As work.
// When the last attempt got a response, however bad its status, the
// Retrier returns that response, not a RetryError; a RetryError means the
// last attempt got none, or the caller's context ended during a wait.
//
// When Attempts is 0 nothing was sent: a layer below refused the first
// attempt (ErrBudgetExceeded, ErrRateLimited, ...), the request could not
// be prepared (net/http refuses a URL without host, an unsupported scheme,
// an invalid method, header or trailer), or its context had ended already;
// IsRefusal then reports true. A refusal after attempts were sent (a retry
// the Budget has no room for) ends the request too, with
// Attempts counting the attempts sent before it, and is no longer a
// refusal: the request as a whole was sent.
//
// A RetryError is not modified after it is returned, and is safe to read
// from several goroutines.
type RetryError struct {
	Attempts int   // how many attempts were sent
	Err      error // the last attempt's error, or why nothing was sent
}

// Error reports the number of attempts and the last error.
func (e *RetryError) Error() string {
	msg := ""
	if e.Err != nil { // the layer's "httpguard:" prefix is already ours
		msg = strings.TrimPrefix(e.Err.Error(), "httpguard: ")
	}
	if e.Attempts == 0 {
		return "httpguard: retry: nothing sent: " + msg
	}
	return "httpguard: retry: after " + strconv.Itoa(e.Attempts) + " attempt(s): " + msg
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
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.cancel(nil)
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// cancelOnClose has resp's body, which is not nil, end an attempt's
// context with cancel once the caller is done with it. A 101's body,
// net/http's connection, stays writable: websocket clients write to it.
func cancelOnClose(resp *http.Response, cancel context.CancelCauseFunc) {
	if w, ok := resp.Body.(io.Writer); ok {
		resp.Body = &cancelWriteBody{cancelBody{ReadCloser: resp.Body, cancel: cancel}, w}
	} else {
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	}
}

// cancelWriteBody is a cancelBody over the writable body net/http gives a
// 101 Switching Protocols answer, which callers assert to be an
// io.ReadWriteCloser.
type cancelWriteBody struct {
	cancelBody
	w io.Writer
}

func (b *cancelWriteBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// maxDrain and maxDrainTime bound the reading of a discarded response, done
// so that its connection can be reused; a longer or slower body is closed
// instead, which costs an HTTP/1 connection. An error body is a few hundred
// bytes sent with the headers, or at most a round trip behind them; one
// that has not ended 20ms after the headers is stalled, or so slow that
// opening a new connection (a handshake of one or two round trips) is
// cheaper than waiting for it.
const (
	maxDrain     = 64 << 10
	maxDrainTime = 20 * time.Millisecond
)

// discard drains and closes a response the Retrier does not return. The
// body is closed from a timer once maxDrainTime has passed, which ends a
// Read in progress (net/http's bodies, HTTP/1 and HTTP/2, allow it).
func (r *Retrier) discard(resp *http.Response) {
	if resp != nil && resp.Body != nil {
		r.drain(resp.Body, io.Discard)
	}
}

// drain copies body to w within maxDrain and maxDrainTime, closes it, and
// reports whether it ended within them.
func (r *Retrier) drain(body io.ReadCloser, w io.Writer) (whole bool) {
	var closed atomic.Bool
	closeOnce := func() {
		if closed.CompareAndSwap(false, true) {
			body.Close()
		}
	}
	t := r.afterFunc(maxDrainTime, closeOnce)
	_, err := io.CopyN(w, body, maxDrain+1)
	t.Stop()
	closeOnce()
	return err == io.EOF
}

// keep is discard for the answer of an attempt whose body the transport
// below still holds: should it hold it past maxBodyWait, no retry is sent
// and the caller gets this answer (see sentBody). It returns a copy of resp
// with the body read, or nil when the body did not end within discard's
// bounds.
func (r *Retrier) keep(resp *http.Response) *http.Response {
	if resp == nil {
		return nil
	}
	kept := *resp
	if resp.Body != nil {
		var body bytes.Buffer
		if !r.drain(resp.Body, &body) {
			return nil
		}
		kept.Body, kept.ContentLength = io.NopCloser(&body), int64(body.Len())
	}
	return &kept
}

// ignore closes the body of a response that came with an error. It is a
// function of its own so that the attempt loop, where it is rare, stays
// small.
func ignore(resp *http.Response) {
	if resp.Body != nil {
		resp.Body.Close()
	}
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// sleepCtx waits d, or until ctx ends: then it returns contextEnd(ctx).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return contextEnd(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return contextEnd(ctx)
	}
}

// withCancelChannel returns ctx, made to end too when cancel closes: a
// request's Cancel channel (deprecated, still honoured by net/http), for
// a layer's wait, which watches a context. For a nil channel, as nearly
// every request has, it returns ctx itself, at no cost. stop frees the
// goroutine that watches the channel; call it once the wait is over.
func withCancelChannel(ctx context.Context, cancel <-chan struct{}) (_ context.Context, stop func()) {
	if cancel == nil {
		return ctx, func() {}
	}
	wctx, end := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-cancel:
			end(errCancelClosed)
		case <-wctx.Done():
		}
	}()
	return wctx, func() { end(nil) }
}

// errCancelClosed is the cause of a wait withCancelChannel ended.
var errCancelClosed = errors.New("httpguard: the request's Cancel channel was closed")

// contextEnd is why ctx ended, nil while it has not: ctx.Err(), and the
// cause a caller ended it with (WithCancelCause, WithTimeoutCause;
// errgroup's first error), which net/http returns for an attempt ctx ends,
// so that errors.Is finds both. An error path's: it allocates only for a
// cause that is not ctx.Err().
func contextEnd(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	cause := context.Cause(ctx)
	if errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
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

// redactURL drops userinfo, the query and the fragment, where some APIs
// put keys, also from an opaque URL, which net/http sends as written
// ("//user:key@host/v1/…?key=…").
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	if c.Opaque != "" {
		c.Opaque = errorPath(&c)
	}
	return c.String()
}
