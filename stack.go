package httpguard

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptrace"
	"reflect"
	"slices"
	"sync/atomic"
	"time"
)

// This file is the stack: how layers compose, and every piece of
// information that passes between them. Layers meet only through what is
// listed here; each still works alone, and a new layer needs no edit to
// another.
//
//   - Refusals (Refuse, IsRefusal). Written by any layer that stops a
//     request before sending any of it: the Budget (ErrBudgetExceeded,
//     ErrUnknownModel), the Limiter (ErrRateLimited), a breaker. Read by the
//     Retrier, which never retries a refusal and does not count it as an
//     attempt sent, by the Budget, which releases the reservation of an
//     attempt a layer below it refused, and by a Fallback, which then gives
//     the caller the answer of an earlier target that received the request
//     (as it does when net/http's trace shows no attempt wrote it). The
//     Retrier and the Budget look for a refusal in an attempt's error only
//     above its context's cause (refusedBelow): a caller may end a context
//     with a refusal of its own (errgroup's first error), which net/http
//     returns for an attempt in flight.
//   - A refusal the server set (LimitError, limitedByServer). Written by
//     the Limiter when the turn a request could not wait for was set by
//     what the server said: a pause it asked for, or a rate its 429s
//     lowered. Read by a Fallback, which gives such a request to its next
//     target, as it does one an open circuit refused (ErrCircuitOpen); a
//     request refused by the configured rates alone stays with its target.
//   - The attempt timer (holdAttemptTimer). Written by the Retrier into each
//     attempt's context when RetryPolicy.AttemptTimeout is set. Read by the
//     layers that queue a request in the client (the Budget waiting for room,
//     the Limiter waiting for a turn): they hold the timer while the attempt
//     waits, since time queued here is not the server's slowness (the
//     Retrier holds it too while net/http writes the request's body). Read
//     too by the Breaker, which counts an attempt the timer ended as a failure
//     and one the caller's own context ended as nothing. The timer ends the
//     attempt's context with a cause that is both ErrAttemptTimeout and
//     context.Canceled (errAttemptTimedOut), which net/http returns as the
//     attempt's error and otelguard reads (context.Cause) to count the
//     attempt a timeout, not the caller's cancellation.
//   - The request body an attempt was sent with (sentBody, bodyUse). The
//     Retrier calls GetBody for a retry, and a Fallback for the next
//     target, only once the transport below has closed the attempt's body
//     and no Read of it is under way, since a GetBody may rewind the very
//     reader that body reads. A layer that
//     sends a GetBody copy in place of the Body it received (the Budget's,
//     the Limiter's and the Breaker's rewindingBody, the Budget's edited
//     stream body) closes that Body only once its own is closed and no
//     Read of it is under way, so that the Close the Retrier waits for
//     still means nothing reads the caller's body. The Budget reads the
//     Body of a request whose GetBody is http.NewRequest's (which hands
//     out a new reader each time, and which the Retrier does not track)
//     whole into a pooled buffer, closes it at once, and sends those bytes
//     (keptBody): the bytes priced are the bytes sent. Once a write of
//     the attempt got no answer, the GetBody the Budget sends down fails
//     (sendOnce), so that nothing below sends it again on the same
//     reservation: net/http (a replayable request on a broken kept-alive
//     connection; any request, a POST too, whose HTTP/2 stream was reset
//     after it was written), nor a Retrier or a Fallback placed below the
//     Budget. Each write is reserved. A copy it serves once an exchange
//     began (net/http's resend, on a second reservation after a lost
//     write, see holdAgain) is read into memory first (resendBody):
//     net/http asks for it once it has closed the body the Retrier
//     tracks, and may write it on after an early answer, while the
//     Retrier's next GetBody rewinds the caller's reader. Likewise the
//     GetBody a Retrier sends
//     each attempt down with (resendGate) fails once the attempt's Body is
//     sent (a byte of it read, or it is closed), so that net/http does not
//     send it again on its own, outside MaxRetries, the Retrier's waits
//     and its retry budget; over a GetBody of http.NewRequest's it counts
//     as one (freshGetBody), so the Budget still reads the Body itself. A
//     Retrier whose next is a Budget, or a Breaker whose next is a Budget
//     (Retrier.Wrap sees it), puts up no gate of its own: the Budget's
//     sendOnce does its work for a priced attempt, in the copy of the
//     request the Budget makes anyway, by what net/http's trace says was
//     written (the Budget's own read of the Body would pass for a send),
//     and the Budget puts the gate up for what it passes unpriced
//     (gatePass).
//   - The parsed request body (parsedChat). Written by the Budget into the
//     context of the request it sends down; read by the Limiter (and by a
//     Breaker placed below the Budget), which then does not read and parse
//     the body again, nor read the path for whether its endpoint is free
//     (freeEndpoint). It vouches only for the very
//     *http.Request the Budget sent: a layer in between that rewrites the
//     request must copy it (the RoundTripper contract), and the copy is
//     parsed afresh.
//   - The answer's usage (parsedRequest.usageTo). The Limiter, when the
//     Budget's parse vouches for its request, leaves there what should hear
//     of the usage instead of scanning the answer itself; the Budget, which
//     scans it anyway, passes the usage on. Each answer is scanned once.
//     Limiters stacked below one Budget (a tenant's above a gateway's)
//     chain there: each passes the usage on to the one it replaced.
//   - X-Should-Retry: false. Set by the Retrier on every response it returns
//     after deciding, so that SDKs that retry on their own (openai-go,
//     anthropic-sdk-go) do not retry again on top of it. Set too by the
//     Breaker on an answer that comes when its circuit is open (its failure
//     opened it, or another's while it was out), so that the Retrier (its
//     DefaultClassifier) returns that answer at once rather than wait a
//     backoff for a retry the open circuit would refuse; the error of such
//     an attempt (a connection failure, a timeout) is marked likewise
//     (openedCircuit), for DefaultClassifier.
//   - An outcome discarded below the Budget (discardedBelow). Written by
//     a Retrier placed below the Budget (not the recommended order) before
//     it sends an attempt again, and by a Fallback placed there before it
//     sends the request to its next target: the outcome it discards, a
//     response or an error. Read by the Budget's GetBody (sendOnce), which
//     fails, as after a write lost, when the provider may have billed that
//     outcome: a 2xx (its Classifier retries it, or its AttemptTimeout
//     ended the attempt as it came in), or an error after the exchange's
//     answer began (not a refusal below, which sent nothing). That spent the attempt's one reservation, so the
//     Retrier returns what it has instead of writing the request again, and
//     the Fallback gives the caller that outcome.
//   - A request priced above a Fallback (pricedAbove). Read by a Fallback
//     placed below the Budget (not the recommended order) from the Budget's
//     attempt in the request's context: it sends no target a request in
//     which it asks for another model (by its Models, or the deployment
//     its BaseURL names), since the Budget above reserved the
//     attempt at the prices of the model the request names, and would
//     charge the answer at them; the caller gets the earlier target's
//     outcome, or the error when there is none.
//   - stream_options.include_usage. Added by the Budget to streaming
//     OpenAI-style requests so that the provider reports usage; the Budget
//     removes the usage-only chunk from what the caller reads.

// A Layer wraps a RoundTripper with one behaviour: retrying, rate limiting,
// budgeting, tracing. Layers compose with Chain.
//
// Wrap must not call next; it returns a RoundTripper that calls next when it
// runs. The returned RoundTripper must keep the net/http RoundTripper
// contract (see the package documentation).
type Layer interface {
	Wrap(next http.RoundTripper) http.RoundTripper
}

// LayerFunc adapts a plain middleware function to a Layer. A constructor
// that also takes options or returns its own type, such as
// otelhttp.NewTransport(base, opts...) *otelhttp.Transport, does not convert
// to a LayerFunc; it joins through a closure:
//
//	httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
//		return otelhttp.NewTransport(next)
//	})
//
// The nil LayerFunc is not usable: Wrap would panic.
type LayerFunc func(next http.RoundTripper) http.RoundTripper

// Wrap calls f(next).
func (f LayerFunc) Wrap(next http.RoundTripper) http.RoundTripper { return f(next) }

// Chain stacks layers onto base and returns the result. layers[0] is the
// outermost: it sees each request first and each response last. A nil base
// means http.DefaultTransport; nil layers are skipped. Chain calls each
// layer's Wrap once, now; the RoundTripper it returns is safe for concurrent
// use when the layers and base are.
//
// The recommended order is Retrier, Budget, Limiter (see the package
// documentation for why):
//
//	httpguard.Chain(nil, retrier, budget, limiter)
func Chain(base http.RoundTripper, layers ...Layer) http.RoundTripper {
	rt := base
	if rt == nil {
		rt = http.DefaultTransport
	}
	for i := len(layers) - 1; i >= 0; i-- {
		if layers[i] != nil {
			rt = layers[i].Wrap(rt)
		}
	}
	return rt
}

// closeIdleConnections forwards http.Client.CloseIdleConnections through a
// layer to the transport below it.
func closeIdleConnections(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// zeroLayer is what the Wrap of a layer written as a struct literal
// (&Retrier{}) instead of made by its constructor returns: every request
// fails, unsent, with an error that names the constructor, where the layer
// would panic or refuse it for a wrong reason. It is chosen once, in Wrap:
// requests through a layer that was made pay nothing for it.
type zeroLayer struct{ err error }

func (z zeroLayer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close() // a RoundTripper closes the body, also on errors
	}
	return nil, z.err
}

func newZeroLayer(layer, constructor string) zeroLayer {
	return zeroLayer{Refuse(errors.New("httpguard: the zero " + layer + " is not usable: make one with " + constructor))}
}

var (
	zeroRetrier  = newZeroLayer("Retrier", "NewRetrier")
	zeroBudget   = newZeroLayer("Budget", "NewBudget")
	zeroLimiter  = newZeroLayer("Limiter", "NewLimiter")
	zeroBreaker  = newZeroLayer("Breaker", "NewBreaker")
	zeroFallback = newZeroLayer("Fallback", "NewFallback")
)

// orDefault returns rt, or http.DefaultTransport when rt is nil.
func orDefault(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return http.DefaultTransport
	}
	return rt
}

// errNoURL and errNoResponse are what every layer returns, with its name,
// for a request without a URL (net/http refuses it too: "http: nil
// Request.URL") and for a transport below that returned neither a
// response nor an error: never a panic.
var (
	errNoURL      = errors.New("request has no URL")
	errNoResponse = errors.New("the transport below returned neither a response nor an error")
)

// DefaultMaxWait is how long a request waits, by default, for its turn
// (LimitConfig.MaxWait) or for room in a budget (BudgetConfig.MaxWait)
// before it is refused. Both layers read MaxWait the same way: zero means
// DefaultMaxWait, a negative MaxWait means never wait, and the request's
// context deadline always bounds the wait too.
const DefaultMaxWait = 30 * time.Second

// Refuse marks err as a refusal: the layer that returns it stopped the
// request before sending any of it, and sending the same request again
// cannot help (the Limiter found the turn too far away, the Budget found no
// room, a breaker is open). The Retrier never retries a refusal and does not
// count it as an attempt; a Budget above the refusing layer releases the
// attempt's reservation, as nothing can have been billed.
//
// The returned error has err's message and unwraps to err, so errors.Is and
// errors.As see through it. Refuse(nil) is nil. Layers outside this package
// mark their own refusals with it.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &refusal{err}
}

// IsRefusal reports whether err, or an error it wraps, was marked by Refuse,
// unless a *RetryError in between reports attempts sent: a request refused
// after some of its attempts were sent was sent, whoever wrapped the
// refusal.
func IsRefusal(err error) bool { return refusalAbove(err, nil) }

// refusedBelow is IsRefusal for the error of an attempt sent with ctx. A
// refusal inside ctx's cause is the caller's, not the attempt's: net/http
// returns the cause as the error of an attempt in flight when ctx ends,
// and errgroup cancels a group with its first error, often a sibling's
// refusal (the Budget's). A layer below that refuses because ctx ended
// wraps the cause in its own refusal, which is found before the cause.
func refusedBelow(ctx context.Context, err error) bool {
	if ctx.Err() == nil {
		return IsRefusal(err)
	}
	return refusalAbove(err, context.Cause(ctx))
}

// refusalAbove is IsRefusal, looking no further into err than cause (nil:
// to its end).
func refusalAbove(err, cause error) bool {
	comparable := cause != nil && reflect.TypeOf(cause).Comparable()
	for err != nil {
		if comparable && reflect.TypeOf(err) == reflect.TypeOf(cause) && err == cause {
			return false
		}
		switch e := err.(type) {
		case *refusal:
			return true
		case *RetryError:
			if e.Attempts > 0 {
				return false
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			return slices.ContainsFunc(u.Unwrap(), func(err error) bool { return refusalAbove(err, cause) })
		default:
			return false
		}
	}
	return false
}

type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// finalError is the error of an attempt that was sent and whose outcome a
// layer below refuses to return (the Budget's, for a protocol upgrade
// answered 101: see switchedProtocols): it is an attempt, unlike a
// refusal, but sending it again cannot help, so the Retrier returns it
// without asking its Classifier; nor is it the provider's failure, so no
// Breaker counts it and no Fallback sends it to the next target (see
// retryTransportError).
type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

// isFinal reports whether err, or an error it wraps, is a finalError.
func isFinal(err error) bool {
	var f *finalError
	return errors.As(err, &f)
}

// attemptTimer is an attempt's AttemptTimeout, in the attempt's context
// (see the top of this file).
type attemptTimer struct {
	d      time.Duration
	cancel context.CancelCauseFunc
	timer  *time.Timer
	// state is timerRunning until stop or fire, whichever comes first,
	// settles it: Timer.Stop returns before a callback it could not stop
	// has run, so neither its result nor a flag the callback sets can tell
	// stop whether the attempt is being cancelled.
	state atomic.Int32
	// writing is set while net/http writes the request's body, with the
	// timer stopped: see trace.
	writing atomic.Bool
	trace   httptrace.ClientTrace
}

const (
	timerRunning int32 = iota
	timerStopped
	timerFired
)

type attemptTimerKey struct{}

func startAttemptTimer(afterFunc func(time.Duration, func()) *time.Timer, d time.Duration, cancel context.CancelCauseFunc) *attemptTimer {
	a := &attemptTimer{d: d, cancel: cancel}
	a.trace = httptrace.ClientTrace{WroteHeaders: a.writeBody, WroteRequest: a.wroteBody}
	a.timer = afterFunc(d, a.fire)
	return a
}

// writeBody and wroteBody, the attempt's httptrace hooks, stop the timer
// while net/http writes the request's body and start it again, from its
// full length, once the body is written, as net/http's
// ResponseHeaderTimeout counts: an upload slower than the timeout is not a
// server that hangs. net/http may write a request twice (on a fresh
// connection when a kept-alive one was dead), so a second writeBody keeps
// the timer stopped; a wroteBody after the attempt is over (net/http may
// end writing after the answer came) only arms a timer whose fire does
// nothing.
func (a *attemptTimer) writeBody() {
	if a.timer.Stop() {
		a.writing.Store(true)
	}
}

func (a *attemptTimer) wroteBody(httptrace.WroteRequestInfo) {
	if a.writing.CompareAndSwap(true, false) {
		a.timer.Reset(a.d)
	}
}

func (a *attemptTimer) fire() {
	if a.state.CompareAndSwap(timerRunning, timerFired) {
		a.cancel(errAttemptTimedOut)
	}
}

// stop stops the timer and reports whether it fired; once it returns false
// the timer never cancels the attempt.
func (a *attemptTimer) stop() bool {
	a.timer.Stop()
	return !a.state.CompareAndSwap(timerRunning, timerStopped)
}

// holdAttemptTimer stops the AttemptTimeout of the attempt ctx belongs to,
// if any, and returns a function that starts it again from its full length.
func holdAttemptTimer(ctx context.Context) (resume func()) {
	a, _ := ctx.Value(attemptTimerKey{}).(*attemptTimer)
	if a == nil || !a.timer.Stop() {
		return func() {}
	}
	return func() { a.timer.Reset(a.d) }
}

// parsedChatKey is the context key under which the Budget leaves its
// *budgetAttempt, whose parsedRequest is for the layers below (see the top
// of this file and parsedChat).
type parsedChatKey struct{}

// parsedRequest is what an outer layer parsed from the body of a request
// it sent down (a budgetAttempt's sent).
type parsedRequest struct {
	chat chatRequest
	// runs is the model that runs the request (see runningModel), which
	// names its Limiter bucket and its circuit.
	runs string
	// free and moderation are freeEndpoint(sent), as the layer read it.
	free, moderation bool
	// usageTo, when set by a layer below, hears of the answer's usage once
	// the Budget has read it (ok false when there is none to read).
	usageTo usageReporter
	// correction is room for the first Limiter's usageTo, which then costs
	// no allocation of its own.
	correction tokenCorrection
}

// parsedChat returns what an outer layer parsed from req's body, if req is
// the very request that layer sent down. Any other request, such as a
// retry's copy or one a layer in between rewrote (which must copy it), is
// not vouched for.
func parsedChat(req *http.Request) (*parsedRequest, bool) {
	a, ok := req.Context().Value(parsedChatKey{}).(*budgetAttempt)
	if !ok || req != &a.sent {
		return nil, false
	}
	return &a.parsed, true
}

// pricedAbove reports whether a Budget above priced the request whose
// context ctx is (see the top of this file).
func pricedAbove(ctx context.Context) bool {
	_, ok := ctx.Value(parsedChatKey{}).(*budgetAttempt)
	return ok
}

// discardedBelow tells the Budget whose attempt ctx belongs to, if any,
// that a layer below it discards the outcome of that attempt's last
// exchange, resp or err, to send the attempt again (see the top of this
// file).
func discardedBelow(ctx context.Context, resp *http.Response, err error) {
	if a, ok := ctx.Value(parsedChatKey{}).(*budgetAttempt); ok {
		a.discardedBelow(resp, err)
	}
}
