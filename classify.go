package httpguard

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// A Classifier decides whether an attempt's outcome is worth retrying. ctx
// is the caller's context; resp is the response (nil after a transport
// error) and err the transport error (nil with a response). The error it
// returns says why, for logs and hooks; it is never returned to the caller
// in place of a response.
//
// A Classifier may read the response body only if it leaves the whole body
// readable, for example by replacing resp.Body with a reader that replays
// what it read. It has the shape of go-retryablehttp's CheckRetry, so
// retryablehttp.DefaultRetryPolicy and ErrorPropagatedRetryPolicy plug in as
// they are (they do not know the AI-specific cases DefaultClassifier
// handles: quota 429s and x-should-retry). It is called from the
// goroutines of concurrent requests, so it must be safe for concurrent use.
type Classifier func(ctx context.Context, resp *http.Response, err error) (bool, error)

// Reasons DefaultClassifier gives. They reach RetryEvent.Reason and the
// Logger, never the caller: wrapped with detail ("status 503: retryable
// status"), so compare with errors.Is. Unlike this package's other errors
// they carry no "httpguard:" prefix, as they describe a response, not a
// failure of the request.
var (
	// ErrRetryableStatus: the status code is one that may succeed later.
	ErrRetryableStatus = errors.New("retryable status")
	// ErrBillingStop: a 429 that reports a spent quota or spend limit
	// (insufficient_quota, enforced_spend_limit_reached). It is not a rate
	// limit: retrying cannot succeed until someone pays.
	ErrBillingStop = errors.New("quota or spend limit reached")
	// ErrServerSaidRetry and ErrServerSaidNoRetry: the response carried
	// x-should-retry, which overrides the status.
	ErrServerSaidRetry   = errors.New("server said x-should-retry: true")
	ErrServerSaidNoRetry = errors.New("server said x-should-retry: false")
)

// maxPeek and maxPeekTime bound how much of a 429 body DefaultClassifier
// reads to look for a billing stop, and how long it waits for it. Provider
// error bodies are a few hundred bytes that arrive with the headers; a
// body that has not arrived within maxPeekTime (the same reasoning as
// maxDrainTime) is taken for a rate limit's, and its bytes reach the caller
// whenever they come. maxPeekTime is a variable for tests that need the
// peek to succeed on a machine too loaded to schedule it within 20 ms.
const maxPeek = 16 << 10

var maxPeekTime = 20 * time.Millisecond

// DefaultClassifier retries:
//   - transport errors, such as refused or reset connections, unexpected
//     EOF, HTTP/2 GOAWAY, attempt timeouts and temporary DNS failures,
//     except those go-retryablehttp's DefaultRetryPolicy refuses (too many
//     redirects, unsupported scheme, invalid header, untrusted or failed
//     certificates), a host name that does not exist, and what net/http
//     refuses, as it will each time: a body whose length differs from its
//     ContentLength, a URL without host (a base URL's typo, such as
//     "https:/api.openai.com/v1"), a nil Header, an invalid method or
//     trailer;
//   - 408, 409, 429, 500, 502, 503, 504 and 529 (Anthropic's overloaded).
//
// It never retries once the caller's context is done, nor a 2xx, 501, 505
// or any other status, nor an attempt whose failure opened a Breaker's
// circuit below (a retry would be refused). A 429 whose error body says insufficient_quota or
// enforced_spend_limit_reached is a billing stop and is not retried (its
// body stays readable), also when it is gzip-compressed because the caller
// set Accept-Encoding itself. A response header x-should-retry: true or false,
// sent by OpenAI and Anthropic, overrides the status, except that a 2xx is
// never retried: its answer was produced and billed.
func DefaultClassifier(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		if oc := (*openedCircuit)(nil); errors.As(err, &oc) {
			return false, fmt.Errorf("%w, which opened its circuit", err)
		}
		return retryTransportError(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return false, nil
	}
	switch resp.Header.Get("X-Should-Retry") {
	case "true":
		return true, ErrServerSaidRetry
	case "false":
		return false, ErrServerSaidNoRetry
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		if isBillingStop(ctx, resp) {
			return false, fmt.Errorf("status 429: %w", ErrBillingStop)
		}
		fallthrough
	case http.StatusRequestTimeout, http.StatusConflict,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, 529:
		return true, fmt.Errorf("status %d: %w", resp.StatusCode, ErrRetryableStatus)
	}
	return false, nil
}

// retryTransportError is DefaultClassifier's rule for transport errors.
func retryTransportError(ctx context.Context, err error) (bool, error) {
	if IsRefusal(err) || isFinal(err) { // refused unsent; or sent, and to be sent nowhere again
		return false, err
	}
	if hostNotFound(err) {
		return false, err // asking again will not create the name
	}
	if inChain(err, func(msg string) bool { return strings.HasPrefix(msg, "http: ContentLength=") }) || unsendable(err) {
		// net/http refused the request itself (a body not as long as
		// declared, a URL without host, no Header), as it will every time.
		return false, err
	}
	// go-retryablehttp matches the *url.Error that http.Client adds;
	// called directly, inside a RoundTripper, the error may not be
	// wrapped yet.
	var ue *url.Error
	if !errors.As(err, &ue) {
		err = &url.Error{Op: "Do", Err: err}
	}
	return retryablehttp.DefaultRetryPolicy(ctx, nil, err)
}

// hostNotFound reports whether err says the host's name does not exist
// (not a lookup that failed for now): asking again will not create it,
// while another host has a name of its own.
func hostNotFound(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound && !dns.IsTemporary && !dns.IsTimeout
}

// droppedUnanswered reports whether err says the attempt's connection
// ended under it before any byte of an answer: net/http's io.EOF reading
// the answer's first byte, a connection reset or broken pipe, a write to
// the connection net/http closed as its read ended, or its "server closed
// idle connection". On a kept-alive connection that is a server's idle
// timeout (nginx's keepalive_timeout, a Go server's IdleTimeout) closing it
// just as the request went out, a race, not a failing provider: net/http
// sends a GET again at once on a new connection, but not a POST, which the
// Retrier retries. So the first retry of such an attempt waits no backoff
// (see RetryPolicy.BaseDelay). The server may have read a POST it did not
// answer, as after any error once the request was written; the Budget
// charges a write reported whole its reservation.
func droppedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) ||
		inChain(err, func(msg string) bool { return msg == "http: server closed idle connection" })
}

// unsendable reports whether err is net/http refusing a request before
// opening any connection for it, as it will every time: a URL without host
// (a base URL's typo, "https:/api.openai.com/v1") or an unsupported scheme,
// a nil Header, an invalid method, or a header or trailer field that is not
// valid HTTP (an API key read from a file with its newline). The error or
// one it wraps must be net/http's whole: a server's bytes that net/http
// quotes in an error ("malformed HTTP response \"unsupported protocol
// scheme\"") do not make an attempt the server read an unsent one.
func unsendable(err error) bool { return inChain(err, unsendableMessage) }

// IsUnsendable reports whether err is net/http refusing a request before
// opening any connection for it, as it will every time: a URL without host
// or with an unsupported scheme, a nil Header, an invalid method, or a
// header or trailer field that is not valid HTTP (an API key read from a
// file with its newline). Nothing was sent. A layer below the Retrier sees
// such an error as net/http returns it; the Retrier returns it as a
// refusal (see IsRefusal).
func IsUnsendable(err error) bool { return unsendable(err) }

func unsendableMessage(msg string) bool {
	return msg == "http: no Host in request URL" || msg == "http: nil Request.Header" ||
		strings.HasPrefix(msg, "unsupported protocol scheme ") ||
		strings.HasPrefix(msg, "net/http: invalid method ") ||
		strings.HasPrefix(msg, "net/http: invalid header ") ||
		strings.HasPrefix(msg, "net/http: invalid trailer ")
}

// unsendableBelow is unsendable for the error of an attempt sent with ctx,
// looking no further into err than ctx's cause once ctx has ended: the
// cause is the caller's (errgroup's first error: a sibling's request that
// net/http refused), which net/http returns for an attempt in flight, as
// refusedBelow says of a refusal.
func unsendableBelow(ctx context.Context, err error) bool {
	if ctx.Err() == nil {
		return unsendable(err)
	}
	cause := context.Cause(ctx)
	comparable := reflect.TypeOf(cause).Comparable()
	for ; err != nil; err = errors.Unwrap(err) {
		if comparable && reflect.TypeOf(err) == reflect.TypeOf(cause) && err == cause {
			return false
		}
		if unsendableMessage(err.Error()) {
			return true
		}
	}
	return false
}

// inChain reports whether the message of err, or of an error it wraps
// (errors.Unwrap's chain), satisfies is.
func inChain(err error, is func(msg string) bool) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if is(err.Error()) {
			return true
		}
	}
	return false
}

// classify applies c to an attempt's outcome, with transport errors seen as
// http.Client would wrap them. (Refusals never get here: they are not
// attempts.)
func classify(ctx context.Context, c Classifier, resp *http.Response, err error, req *http.Request) (bool, error) {
	if err == nil {
		return c(ctx, resp, nil)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		err = &url.Error{Op: urlErrorOp(req.Method), URL: redactURL(req.URL), Err: err}
	}
	return c(ctx, nil, err)
}

// keepsAnswer reports whether the attempt that ended in resp or err is
// not retried without asking r's Classifier: it is DefaultClassifier,
// which never retries a 2xx.
func (r *Retrier) keepsAnswer(resp *http.Response, err error) bool {
	return r.defaultClassify && err == nil && resp.StatusCode >= 200 && resp.StatusCode <= 299
}

// urlErrorOp is the Op http.Client puts in a *url.Error.
func urlErrorOp(method string) string {
	if method == "" {
		return "Get"
	}
	return method[:1] + strings.ToLower(method[1:])
}

// isBillingStop peeks at a 429's body for the error codes of a spent quota
// and leaves the whole body readable. It waits at most maxPeekTime for the
// body: a body that stalls is not a billing stop's. A gzip body (the caller
// set Accept-Encoding itself) is read decompressed.
func isBillingStop(ctx context.Context, resp *http.Response) bool {
	if resp.Body == nil || resp.Body == http.NoBody {
		return false
	}
	b := &peekedBody{rc: resp.Body, done: make(chan struct{})}
	resp.Body = b
	go b.peek()
	t := time.NewTimer(maxPeekTime)
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
	if strings.EqualFold(strings.TrimSpace(resp.Header.Get("Content-Encoding")), "gzip") {
		return saysBillingStop(gunzipped(b.head))
	}
	return saysBillingStop(b.head)
}

// gunzipped returns what the gzip stream head, or its start, decompresses
// to, at most maxPeek bytes: a caller that set Accept-Encoding itself gets
// a 429's body as the server compressed it, and net/http does not
// decompress it.
func gunzipped(head []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(zr, maxPeek)) // a stream cut short still gives its start
	return b
}

// saysBillingStop reports whether a 429 body, or its start, holds the
// error code of a spent quota.
func saysBillingStop(head []byte) bool {
	return bytes.Contains(head, []byte("insufficient_quota")) || bytes.Contains(head, []byte("enforced_spend_limit_reached"))
}

// longestBillingCode is the longest code saysBillingStop looks for.
const longestBillingCode = len("enforced_spend_limit_reached")

// peekedBody is a response body whose first maxPeek bytes are read ahead,
// by a goroutine of its own so that the classifier need not wait for them.
// Reading it returns those bytes, the error that stopped the peek if any,
// then the rest of the body: what the caller would have read without the
// peek.
type peekedBody struct {
	rc   io.ReadCloser
	done chan struct{} // closed when the peek is over; then head and err are set
	head []byte
	err  error
	r    io.Reader // head, err and the rest, from the first Read
}

// peek reads the body's start: up to maxPeek bytes, its end, or the code
// of a spent quota, which may come before a body that ends late.
func (b *peekedBody) peek() {
	head := make([]byte, 0, 512)
	var err error
	for len(head) < maxPeek && err == nil {
		if len(head) == cap(head) {
			head = slices.Grow(head, min(cap(head), maxPeek-len(head)))
		}
		var n int
		n, err = b.rc.Read(head[len(head):min(cap(head), maxPeek)])
		// Only a code the new bytes end can be new: a body that trickles
		// is not scanned again from its start at each read.
		from := max(len(head)-longestBillingCode+1, 0)
		head = head[:len(head)+n]
		if n > 0 && saysBillingStop(head[from:]) {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	b.head, b.err = head, err
	close(b.done)
}

// Read waits for the peek, which a stalled body makes as long as reading
// it would have been anyway.
func (b *peekedBody) Read(p []byte) (int, error) {
	<-b.done
	if b.r == nil {
		b.r = io.MultiReader(bytes.NewReader(b.head), errReader{b.err}, b.rc)
	}
	return b.r.Read(p)
}

// Close closes the body, which also ends a peek in progress.
func (b *peekedBody) Close() error { return b.rc.Close() }

// errReader returns err, if any, where the peek stopped, so a caller reading
// the body sees the same failure it would have seen without the peek.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	return 0, io.EOF
}
