package otelguard

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"github.com/holysheep/httpguard"
	"go.opentelemetry.io/otel/attribute"
)

// Requests returns a Layer that counts the requests leaving the stack, by
// outcome, and the refusals among them by the layer that refused: the
// Budget (ErrBudgetExceeded, ErrUnknownModel), the Limiter
// (ErrRateLimited), the Breaker (ErrCircuitOpen) or another (any other
// error marked by httpguard.Refuse). Put it outermost, above the Retrier
// (and the Fallback), so that it sees each request once.
func (m *Metrics) Requests(attrs ...attribute.KeyValue) httpguard.Layer {
	if m.off() {
		return httpguard.LayerFunc(orDefault)
	}
	return httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return &requestsTransport{m: m, attrs: attrs, next: orDefault(next)}
	})
}

// Attempts returns a Layer that counts the attempts sent to the server, by
// status, or by error type when there was no answer. Put it innermost,
// right above the base transport, so that it sees every attempt the
// layers above let through and nothing they refused.
func (m *Metrics) Attempts(attrs ...attribute.KeyValue) httpguard.Layer {
	if m.off() {
		return httpguard.LayerFunc(orDefault)
	}
	return httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		return &attemptsTransport{m: m, attrs: attrs, next: orDefault(next)}
	})
}

type requestsTransport struct {
	m     *Metrics
	attrs []attribute.KeyValue
	next  http.RoundTripper
}

func (t *requestsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := roundTrip(t.next, req)
	ctx := req.Context()
	if err == nil {
		t.m.requests.Add(ctx, 1, attributes(ctx, t.attrs, keyOutcome.String("answered"), keyStatus.Int(statusLabel(resp.StatusCode))))
		return resp, nil
	}
	if layer, reason, ok := refusedBy(ctx, err); ok {
		t.m.refusals.Add(ctx, 1, attributes(ctx, t.attrs, keyLayer.String(layer), keyReason.String(reason)))
		t.m.requests.Add(ctx, 1, attributes(ctx, t.attrs, keyOutcome.String("refused")))
		return nil, err
	}
	t.m.requests.Add(ctx, 1, attributes(ctx, t.attrs, keyOutcome.String("error"), keyError.String(errorTypeOf(req, err))))
	return nil, err
}

// refusedBy names the layer that refused the request err ended, and why.
// A refusal after attempts were sent (a retry the Budget had no room for)
// still counts: the layer stopped the request. A request whose context
// ended, its caller's doing, is no refusal, though the layer that saw the
// context end marks it one (nothing was sent): the caller gave up. That
// holds whatever the context's cause: errgroup cancels a group with its
// first error, often a sibling's refusal (ErrBudgetExceeded), which
// net/http returns for a request in flight.
func refusedBy(ctx context.Context, err error) (layer, reason string, ok bool) {
	switch {
	case endedWith(ctx, err):
		return "", "", false
	case errors.Is(err, httpguard.ErrBudgetExceeded):
		return "budget", "budget_exceeded", true
	case errors.Is(err, httpguard.ErrUnknownModel):
		return "budget", "unknown_model", true
	case errors.Is(err, httpguard.ErrRateLimited):
		return "limiter", "rate_limited", true
	case errors.Is(err, httpguard.ErrCircuitOpen):
		return "breaker", "circuit_open", true
	case httpguard.IsRefusal(err) && !errors.Is(err, context.Canceled):
		return "other", "refused", true
	}
	return "", "", false
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *requestsTransport) CloseIdleConnections() { closeIdle(t.next) }

type attemptsTransport struct {
	m     *Metrics
	attrs []attribute.KeyValue
	next  http.RoundTripper
}

func (t *attemptsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := roundTrip(t.next, req)
	ctx := req.Context()
	switch {
	case err == nil:
		t.m.attempts.Add(ctx, 1, attributes(ctx, t.attrs, keyStatus.Int(statusLabel(resp.StatusCode))))
	case !refusedBelow(ctx, err) && !unsentBelow(ctx, err):
		t.m.attempts.Add(ctx, 1, attributes(ctx, t.attrs, keyError.String(errorTypeOf(req, err))))
	}
	return resp, err
}

// unsentBelow reports whether err, the error of an attempt sent with ctx,
// is net/http's refusal to send it (httpguard.IsUnsendable): a header
// value that is not valid HTTP, say, which no server saw. Once ctx has
// ended, err may be its cause, the caller's (a sibling's request that
// net/http refused, in errgroup): the attempt is then counted, as ended
// by the caller.
func unsentBelow(ctx context.Context, err error) bool {
	return ctx.Err() == nil && httpguard.IsUnsendable(err)
}

// refusedBelow reports whether err, the error of an attempt sent with ctx,
// is a refusal of a layer below, as httpguard's layers judge it: a
// refusal inside ctx's cause is the caller's, not the attempt's. net/http
// returns the cause as the error of an attempt in flight when ctx ends,
// and errgroup cancels a group with its first error, often a sibling's
// refused call. A layer below that refuses because ctx ended wraps the
// cause in its own refusal, which is found before the cause.
func refusedBelow(ctx context.Context, err error) bool {
	if ctx.Err() == nil {
		return httpguard.IsRefusal(err)
	}
	return refusalAbove(err, context.Cause(ctx))
}

// refusalType is the type of the errors httpguard.Refuse returns.
var refusalType = reflect.TypeOf(httpguard.Refuse(errors.New("")))

// refusalAbove is httpguard.IsRefusal, looking no further into err than
// cause.
func refusalAbove(err, cause error) bool {
	comparable := reflect.TypeOf(cause).Comparable()
	for err != nil {
		if comparable && reflect.TypeOf(err) == reflect.TypeOf(cause) && err == cause {
			return false
		}
		if reflect.TypeOf(err) == refusalType {
			return true
		}
		if re, ok := err.(*httpguard.RetryError); ok && re.Attempts > 0 {
			return false
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if refusalAbove(e, cause) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// errorTypeIn is errorType for the error of a request or an attempt whose
// context is ctx. An error that is the context's end is sorted by how the
// context ended, not by the error: net/http returns the context's cause,
// which a caller chooses (context.WithCancelCause, WithTimeoutCause;
// errgroup cancels with the first error of its group), and its HTTP/2
// transport the bare context.Canceled of an attempt a Retrier ended for
// its AttemptTimeout, whose cause is ErrAttemptTimeout.
func errorTypeIn(ctx context.Context, err error) string {
	if endedWith(ctx, err) {
		if errors.Is(context.Cause(ctx), httpguard.ErrAttemptTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "timeout"
		}
		return "canceled"
	}
	return errorType(err)
}

// errorTypeOf is errorTypeIn for the error of req, a request or an
// attempt: one its caller cancelled by closing its Cancel channel
// (deprecated, still honoured by net/http, and by the Retrier, which does
// not retry it) ends in net/http's "request canceled", which is no
// context's error and says nothing of the connection.
func errorTypeOf(req *http.Request, err error) string {
	if req.Cancel != nil {
		select {
		case <-req.Cancel:
			return "canceled"
		default:
		}
	}
	return errorTypeIn(req.Context(), err)
}

// endedWith reports whether err is ctx's end: ctx is done and err is its
// error or its cause.
func endedWith(ctx context.Context, err error) bool {
	cerr := ctx.Err()
	return cerr != nil && (errors.Is(err, cerr) || errors.Is(err, context.Cause(ctx)))
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *attemptsTransport) CloseIdleConnections() { closeIdle(t.next) }

// errNoResponse is the error of a transport below that returned neither a
// response nor an error, as httpguard's layers report it: never a panic.
var errNoResponse = errors.New("otelguard: the transport below returned neither a response nor an error")

// roundTrip sends req through rt, a (nil, nil) turned into errNoResponse.
func roundTrip(rt http.RoundTripper, req *http.Request) (*http.Response, error) {
	resp, err := rt.RoundTrip(req)
	if resp == nil && err == nil {
		return nil, errNoResponse
	}
	return resp, err
}

func orDefault(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return http.DefaultTransport
	}
	return rt
}

func closeIdle(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
