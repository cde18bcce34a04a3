package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
)

// A record is what the access log says of one request. The handler fills
// it in, and the stack's hooks add what happened inside: the attempts and
// their time upstream, the retries, the moves to a fallback and the target
// that answered, the money charged, and the budget that refused. It
// travels in the request's context.
type record struct {
	start          time.Time
	method, path   string
	tenant, model  string
	runs           string // the model that runs the request, as the Breaker keys its circuits
	upstream       string
	charger        string // the budget whose charges the record counts
	refusal        string // why the proxy refused, when it did
	target         string // the target that answered, with fallbacks
	stackStart     time.Time
	answeredAt     atomic.Int64 // unix ns: when the stack returned
	attempts       atomic.Int32
	retries        atomic.Int32
	fallbacks      atomic.Int32           // moves to the next target
	upstreamTime   atomic.Int64           // ns spent in attempts, until their headers
	spend          atomic.Int64           // Money
	refusingBudget atomic.Pointer[string] // the budget that refused
	refusingLimits atomic.Pointer[string] // the limiter that refused: the tenant's, or globalBudget
	err            string                 // the stack's error, for the operator's log
}

type recordKey struct{}

func recordOf(ctx context.Context) *record {
	r, _ := ctx.Value(recordKey{}).(*record)
	return r
}

// countAttempts is the innermost layer: it counts each attempt sent and
// the time it took to get its headers.
func countAttempts(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := next.RoundTrip(req)
		if rec := recordOf(req.Context()); rec != nil {
			rec.attempts.Add(1)
			rec.upstreamTime.Add(int64(time.Since(start)))
		}
		return resp, err
	})
}

// keepStackHeaders, innermost, keeps an upstream's Connection header from
// naming a header the stack sets on the answer (X-Should-Retry,
// httpguard.TargetHeader): ReverseProxy removes the headers Connection
// names after the stack returns, and a tenant's SDK told nothing would
// retry what the proxy retried already. The other names stay, and go.
func keepStackHeaders(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if resp != nil {
			for i, v := range resp.Header["Connection"] {
				resp.Header["Connection"][i] = withoutStackHeaders(v)
			}
		}
		return resp, err
	})
}

// withoutStackHeaders is the Connection header v without the names of
// the headers the stack sets. A value that names none of them (keep-alive,
// close: most answers) is v itself, found without an allocation.
func withoutStackHeaders(v string) string {
	found := false
	for f := range strings.SplitSeq(v, ",") {
		found = found || namesStackHeader(f)
	}
	if !found {
		return v
	}
	var kept []string
	for f := range strings.SplitSeq(v, ",") {
		if !namesStackHeader(f) {
			kept = append(kept, f)
		}
	}
	return strings.Join(kept, ",")
}

// namesStackHeader reports whether f, an element of a Connection header,
// names a header the stack sets on an answer.
func namesStackHeader(f string) bool {
	name := textproto.TrimString(f)
	return strings.EqualFold(name, "X-Should-Retry") || strings.EqualFold(name, httpguard.TargetHeader)
}

// named wraps layer l so that a refusal it makes (an error wrapping
// refusal) names it in the record's slot that which picks: the innermost
// layer that refused is the first to write its name.
func named(name string, l httpguard.Layer, refusal error, which func(*record) *atomic.Pointer[string]) httpguard.Layer {
	return httpguard.LayerFunc(func(next http.RoundTripper) http.RoundTripper {
		inner := l.Wrap(next)
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := inner.RoundTrip(req)
			if err != nil && errors.Is(err, refusal) {
				if rec := recordOf(req.Context()); rec != nil {
					which(rec).CompareAndSwap(nil, &name)
				}
			}
			return resp, err
		})
	})
}

// namedBudget and namedLimits name the budgets and limiters that refuse.
func namedBudget(name string, b *httpguard.Budget) httpguard.Layer {
	return named(name, b, httpguard.ErrBudgetExceeded, func(rec *record) *atomic.Pointer[string] { return &rec.refusingBudget })
}

func namedLimits(name string, l *httpguard.Limiter) httpguard.Layer {
	if l == nil {
		return nil
	}
	return named(name, l, httpguard.ErrRateLimited, func(rec *record) *atomic.Pointer[string] { return &rec.refusingLimits })
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// answered returns the ModifyResponse of route r: it notes when the stack
// returned an answer and, on a route with fallbacks (whose Fallback sets
// TargetHeader), which target gave it, then names that target to the
// tenant as r.shownAs does, not by its host. With keyed tenants, it drops
// the headers that name the real key's organization and project
// (OpenAI's, and Anthropic's anthropic-organization-id), as dropKeys
// drops those a tenant sends, and those of the account's rate limits,
// and it puts an upstream's 401, 403 and 429 in the proxy's words
// (accountError), the real keys masked by redact:
// tenants see the proxy, not the account. Where redact has keys to mask,
// it refuses a body in an encoding the transport did not undo.
func answered(r *route, keyed bool, redact *redactor) func(*http.Response) error {
	return func(resp *http.Response) error {
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// The proxy asks for no upgrade (forward refuses them): an
			// error here has ReverseProxy close the connection, which it
			// would otherwise leave open for good.
			return errUnaskedUpgrade
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			// net/http panics writing it (an HTTP/1 status line carries
			// 000 to 099, HTTP/2's :status any number): an error here has
			// ReverseProxy close the answer and answer the client.
			return fmt.Errorf("%w (%d)", errBadStatus, resp.StatusCode)
		}
		if keyed {
			dropAccountHeaders(resp.Header)
		}
		if isEventStream(resp.Header.Get("Content-Type")) {
			// Chunked to the client: a stream the stack finds cut is
			// aborted before its last chunk, where a length the upstream
			// framed it by, once written whole, would read as its end.
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
		}
		var target string
		if vs := resp.Header[httpguard.TargetHeader]; r.fallback != nil && len(vs) == 1 {
			target, vs[0] = vs[0], r.shownAs[vs[0]] // in place: no allocation
		}
		var upstreamErr string
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			if keyed {
				upstreamErr = accountError(resp, r.API, *redact)
			}
		}
		if len(redact.keys) > 0 && hasBody(resp) && encoded(resp.Header["Content-Encoding"]) {
			// The transport asks for gzip and undoes it: a body still
			// encoded (deflate, x-gzip, gzip twice, brotli) was not asked
			// for, and the keys in it cannot be masked, while the
			// client's decoder would show them.
			return errUnaskedEncoding
		}
		if rec := recordOf(resp.Request.Context()); rec != nil {
			rec.answeredAt.Store(time.Now().UnixNano())
			rec.target, rec.err = target, upstreamErr
		}
		return nil
	}
}

// errUnaskedUpgrade is an upstream's 101 to a request that asked for no
// upgrade.
var errUnaskedUpgrade = errors.New("the upstream switched protocols (101) unasked")

// errUnaskedEncoding is an upstream's answer whose body comes in a
// content encoding the proxy did not ask for, in which it cannot mask the
// real keys.
var errUnaskedEncoding = errors.New("the upstream answered in a content encoding it was not asked for")

// encoded reports whether a body with the Content-Encoding values ces
// comes encoded: any value but identity.
func encoded(ces []string) bool {
	for _, ce := range ces {
		if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
			return true
		}
	}
	return false
}

// hasBody reports whether resp may carry a body: not an answer to HEAD, a
// 204 or a 304, nor one whose Content-Length is 0.
func hasBody(resp *http.Response) bool {
	return resp.ContentLength != 0 && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified &&
		(resp.Request == nil || resp.Request.Method != http.MethodHead)
}

// errBadStatus is an upstream's answer whose status is no HTTP status, one
// net/http cannot write.
var errBadStatus = errors.New("the upstream answered a status outside 100 to 999")

// dropAccountHeaders removes the headers that name the real key's
// organization and project (OpenAI's, and Anthropic's
// anthropic-organization-id), and those in which a provider reports the
// real key's rate limits and what remains of them (OpenAI's
// x-ratelimit-*, Anthropic's anthropic-ratelimit-*): figures of the
// account every tenant shares, not of a tenant's own limits. The stack
// has read them already; Retry-After stays. LiteLLM passes the
// provider's headers on prefixed llm_provider-: they go too, as do
// LiteLLM's own of the key the proxy holds (x-litellm-key-spend,
// -max-budget, -remaining-…) and of its deployment
// (x-litellm-model-api-base).
func dropAccountHeaders(h http.Header) {
	for k := range h {
		// A trailer ReverseProxy adds unannounced is under TrailerPrefix.
		name := strings.TrimPrefix(strings.TrimPrefix(k, http.TrailerPrefix), "Llm_provider-")
		switch {
		case strings.HasPrefix(name, "X-Ratelimit-"), strings.HasPrefix(name, "Anthropic-Ratelimit-"),
			name == "Openai-Organization", name == "Openai-Project", name == "Anthropic-Organization-Id",
			// LiteLLM's of the key the proxy holds (its spend, budget,
			// limits) and of the deployment (its provider's base URL).
			strings.HasPrefix(name, "X-Litellm-Key-"), name == "X-Litellm-Model-Api-Base":
			delete(h, k)
		}
	}
}

// onRetry counts a retry in the request's record, then tells metrics.
func (p *Proxy) onRetry(metrics func(httpguard.RetryEvent)) func(httpguard.RetryEvent) {
	return func(e httpguard.RetryEvent) {
		if rec := recordOf(e.Request.Context()); rec != nil {
			rec.retries.Add(1)
		}
		metrics(e)
	}
}

// onSwitch counts a move to the next target in the request's record, then
// tells metrics.
func (p *Proxy) onSwitch(metrics func(httpguard.FallbackEvent)) func(httpguard.FallbackEvent) {
	return func(e httpguard.FallbackEvent) {
		if rec := recordOf(e.Request.Context()); rec != nil {
			rec.fallbacks.Add(1)
		}
		metrics(e)
	}
}

// onSettle is budget name's OnSettle: it counts a charge in the record
// and in metrics, once, from the innermost budget of the request's stack
// (a proxy-wide and a tenant's budget both charge each attempt).
func (p *Proxy) onSettle(name string) func(httpguard.Settlement) {
	metrics := p.metrics.OnSettle()
	return func(s httpguard.Settlement) {
		rec := recordOf(s.Request.Context())
		if rec == nil || rec.charger != name {
			return
		}
		rec.spend.Add(int64(s.Charged))
		metrics(s)
	}
}

// statusWriter remembers the status written, for the access log, masks
// the real keys in what it writes (see redactor), and gives each write
// stall to reach the client.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	redact redactor
	keyed  bool // tenants hold keys of their own: see dropAccountHeaders
	// closing: the answer closes the connection (see ServeHTTP), set again
	// on the final answer, as ReverseProxy clears the headers after a 1xx.
	closing bool
	// http10: the client speaks HTTP/1.0, which knows no 1xx (RFC 9110,
	// 15.2): net/http would write them all the same.
	http10 bool
	held   []byte // the end of what was written that may begin a key
	buf    []byte // reused by Write
	rc     *http.ResponseController
	stall  time.Duration
}

// write writes b within the stall bound.
func (w *statusWriter) write(b []byte) (int, error) {
	w.bound()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// bound gives the next write to the client the stall bound to reach it.
func (w *statusWriter) bound() {
	if w.rc != nil && w.rc.SetWriteDeadline(time.Now().Add(w.stall)) != nil {
		w.rc = nil // a writer without deadlines (httptest's): ask no more
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols && w.http10 {
		return // ReverseProxy clears the 1xx's headers next
	}
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) { // a 1xx before the answer is not its status
		w.status = code
	}
	if w.closing && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.Header().Set("Connection", "close")
	}
	if code < 200 && w.keyed {
		// A 1xx's headers, which ReverseProxy writes here as they come:
		// the answer's went through answered, these did not.
		dropAccountHeaders(w.Header())
	}
	w.redact.header(w.Header()) // a 1xx's headers too: ReverseProxy writes them here
	// net/http writes a 1xx at once (an upstream may send many, and large,
	// to a client that stopped reading), and ReverseProxy flushes the
	// answer's headers at once: each within the bound from now, not from
	// an earlier write.
	w.bound()
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(w.redact.keys) == 0 {
		return w.write(b)
	}
	w.buf = append(append(w.buf[:0], w.held...), b...) // b is the caller's: masked in a copy
	held := w.redact.body(w.buf)
	w.held = append(w.held[:0], w.buf[len(w.buf)-held:]...)
	if _, err := w.write(w.buf[:len(w.buf)-held]); err != nil {
		return 0, err
	}
	return len(b), nil
}

// finish writes what Write held back, which began no key after all, and
// masks the keys in the trailers ReverseProxy set (with keyed tenants,
// dropping the account's, as answered drops them from the headers).
func (w *statusWriter) finish() {
	if w.keyed {
		dropAccountHeaders(w.Header())
	}
	w.redact.header(w.Header())
	if len(w.held) > 0 {
		w.write(w.held)
		w.held = nil
	}
	w.bound() // net/http's last flush, after the handler, within the bound too
}

// Unwrap lets http.ResponseController reach the connection's writer, to
// flush each event of a stream.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequest writes the access log record: never a key, a prompt, a
// query string or a header.
func (p *Proxy) logRequest(ctx context.Context, rec *record, w *statusWriter) {
	if !p.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	end := time.Now()
	attrs := make([]slog.Attr, 0, 18)
	attrs = append(attrs,
		slog.String("method", rec.method),
		slog.String("path", rec.path),
		slog.Int("status", w.status),
		slog.String("tenant", rec.tenant),
		slog.String("model", rec.model),
		slog.String("upstream", rec.upstream),
		slog.Int("attempts", int(rec.attempts.Load())),
		slog.Int("retries", int(rec.retries.Load())),
		slog.Int("fallbacks", int(rec.fallbacks.Load())),
		slog.Float64("wait_ms", ms(rec.wait())),
		slog.String("spend", httpguard.Money(rec.spend.Load()).String()),
		slog.Float64("duration_ms", ms(end.Sub(rec.start))),
		slog.Int64("bytes", w.bytes),
	)
	if rec.target != "" {
		attrs = append(attrs, slog.String("target", rec.target))
	}
	if rec.refusal != "" {
		attrs = append(attrs, slog.String("refusal", rec.refusal))
	}
	if rec.err != "" {
		attrs = append(attrs, slog.String("error", p.redact.text(rec.err)))
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}

// wait is the time the request spent in the stack other than in attempts:
// the Limiter's turns, room in a budget, retry backoff.
func (rec *record) wait() time.Duration {
	at := rec.answeredAt.Load()
	if at == 0 || rec.stackStart.IsZero() {
		return 0
	}
	return max(0, time.Unix(0, at).Sub(rec.stackStart)-time.Duration(rec.upstreamTime.Load()))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ErrorLog returns a *log.Logger whose lines become warning records of the
// proxy's log, masked as net/http's own lines are (see redactor.line). Its
// Writer is for the process's standard logger, to which net/http's
// Transport writes lines of its own: what an upstream sent past the end of
// its answer ("Unsolicited response received on idle HTTP channel …",
// quoting those bytes), which would otherwise reach stderr unmasked.
func (p *Proxy) ErrorLog() *log.Logger { return p.errorLog() }

// errorLog is the *log.Logger that ReverseProxy and http.Server write
// their own lines to (a body that broke off while it was copied, a
// panic, a TLS handshake that failed): each becomes a warning record of
// the proxy's log, masked by redact (see redactor.line), which build sets
// only after the ReverseProxies are made.
func (p *Proxy) errorLog() *log.Logger {
	return log.New(logLines{p.log, &p.redact}, "", 0)
}

type logLines struct {
	log    *slog.Logger
	redact *redactor
}

func (l logLines) Write(b []byte) (int, error) {
	l.log.Warn(l.redact.line(strings.TrimSuffix(string(b), "\n")))
	return len(b), nil
}

// isEventStream reports whether ct, a Content-Type, is an event stream's.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}
