package httpguard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// This file is how a Breaker learns the outcome of a 2xx answer: when its
// body ends. A chat stream must end with its terminal event, or with an
// error and nothing after it; one that ends otherwise is reported to the
// reader as the error it is.

// watch makes resp, a 2xx answer with a body, report its outcome when the
// body ends, checking a chat stream for its terminal event.
func (b *Breaker) watch(req *http.Request, resp *http.Response, c *circuit, p pass) {
	a := &answerBody{rc: resp.Body, b: b, c: c, gen: p.gen, round: p.round, ctx: req.Context()}
	// A compressed stream (the caller set Accept-Encoding itself) cannot be
	// read here: its end is its reader's to judge.
	if !b.cfg.AllowUnterminatedStreams && endsWithTerminalEvent(req.URL.Path) && isEventStream(resp.Header.Get("Content-Type")) &&
		resp.Header.Get("Content-Encoding") == "" {
		a.sse = &sseScanner{}
	}
	resp.Body = a
}

// endsWithTerminalEvent reports whether a request goes to an endpoint
// whose streams end with a terminal event: OpenAI's chat completions and
// completions ([DONE]), Anthropic's messages (message_stop), OpenAI's
// Responses API (response.completed, response.incomplete or
// response.failed), and its Images API (image_generation.completed,
// image_edit.completed). Other event streams are not checked.
func endsWithTerminalEvent(path string) bool {
	return strings.HasSuffix(path, "/completions") || strings.HasSuffix(path, "/messages") || strings.HasSuffix(path, "/responses") ||
		strings.HasSuffix(path, "/images/generations") || strings.HasSuffix(path, "/images/edits")
}

// answerBody is a 2xx answer's body that reports its outcome to its
// circuit once, when it ends: read to its end (a success, unless a chat
// stream had not ended: see sseScanner.ended), broken off (a failure,
// unless the caller's context ended it or a chat stream had ended: the
// provider answered in full) or closed (a success, unless a chat stream
// had not ended: the caller stopped reading, which says nothing). How a
// chat stream ended may say otherwise: see answeredOutcome. Read and
// Close may run on different goroutines, so the scanner is guarded by mu.
type answerBody struct {
	rc       io.ReadCloser
	b        *Breaker
	c        *circuit
	gen      uint64 // with round, the pass the circuit let it through with
	ctx      context.Context
	reported atomic.Bool
	round    uint32 // next to reported: the struct stays in 96 bytes

	mu  sync.Mutex
	sse *sseScanner // nil: not a chat stream, or not checked
	err error       // the truncation, once found: every later Read returns it
}

func (a *answerBody) Read(p []byte) (int, error) {
	n, err := a.rc.Read(p)
	answered, fault := false, faultNone // a chat stream ended (see sseScanner.ended), and what it said
	if a.sse != nil {
		a.mu.Lock()
		if a.err == nil {
			a.sse.write(p[:n])
			if err == io.EOF && !streamEnded(a.sse, true) {
				a.err = errStreamCut
			}
		}
		if a.err != nil {
			err = a.err
		}
		answered, fault = a.sse.ended(), a.sse.fault
		a.mu.Unlock()
	}
	if err != nil {
		a.end(err, answered, fault)
	}
	return n, err
}

// errStreamCut is what a reader gets for a chat stream that ended without
// its terminal event, and not at an error either (see sseScanner.ended).
var errStreamCut = fmt.Errorf("httpguard: breaker: the stream ended without its terminal event ([DONE], message_stop or response.completed): %w", io.ErrUnexpectedEOF)

// end reports the outcome of a body whose Read returned err, answered
// when it was a chat stream that had its terminal event, which said fault.
// Such a stream that breaks off after it (the connection lost before the
// body's last chunk) was answered in full, as one closed there: the error
// reaches the reader, but the provider did its part.
func (a *answerBody) end(err error, answered bool, fault responseFault) {
	switch {
	case answered:
		a.settle(answeredOutcome(fault))
	case err == io.EOF:
		a.settle(outcomeSuccess)
	case a.ctx.Err() != nil:
		a.settle(outcomeIgnored)
	default:
		a.settle(outcomeFailure)
	}
}

func (a *answerBody) Close() error {
	// Settled before the body is closed: a Read under way on another
	// goroutine fails for this Close (over HTTP/2 before Close returns),
	// which says nothing of the provider.
	o := outcomeSuccess
	if a.sse != nil {
		a.mu.Lock()
		o = outcomeIgnored
		if a.sse.ended() {
			o = answeredOutcome(a.sse.fault)
		}
		a.mu.Unlock()
	}
	if a.settles(o) {
		a.b.announceClosing(a.c, a.rc)
	}
	return a.rc.Close()
}

func (a *answerBody) settle(o outcome) {
	if a.settles(o) {
		a.b.announce(a.c)
	}
}

// settles reports the outcome o to the circuit, once, and whether it
// changed the circuit's state, a change to announce.
func (a *answerBody) settles(o outcome) bool {
	return a.reported.CompareAndSwap(false, true) && a.c.report(&a.b.cfg, pass{a.gen, a.round}, o, a.b.now())
}

// answeredOutcome is what a chat stream that ended (its terminal event,
// or an error last: see sseScanner.ended) says of the provider, whose
// fault it said its failure was (see responseFault): a Responses stream
// whose response.failed carries a provider's error, or a chat stream
// whose last error before its end, or the error that ended it, is one
// (a 5xx code, server_error, InternalServerError, overloaded_error: see
// errorFault), is the provider failing mid-generation, a failure; any
// other response.failed or error counts neither way, as a 429
// (rate_limit_exceeded, rate_limit_error, RateLimitError) or a caller's
// 4xx (invalid_prompt, BadRequestError) does. A stream without an error
// is a success.
func answeredOutcome(fault responseFault) outcome {
	switch fault {
	case faultProvider:
		return outcomeFailure
	case faultOther:
		return outcomeIgnored
	}
	return outcomeSuccess
}

// streamEnded reports whether s saw its stream's end (see
// sseScanner.ended); at eof, a last line without its newline counts. (The
// scanner's result reads that line; its usage is not wanted here.)
func streamEnded(s *sseScanner, eof bool) bool {
	s.result(eof)
	return s.ended()
}
