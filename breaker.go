package httpguard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// This file is the Breaker: a layer that stops sending to a provider that
// is down. circuit.go is its state machine; streamend.go follows a 2xx
// answer to its end, reporting a chat stream cut short as the error it is.

// ErrCircuitOpen is returned, wrapped, when a Breaker refuses a request
// because the circuit of its key is open (or half-open with all its probes
// out). Nothing of the request was sent. It is a refusal (IsRefusal): a
// Retrier does not retry it, a Budget above charges nothing for it, and a
// Fallback above sends the request to its next target. The error names the
// key and when probes start:
//
//	httpguard: breaker: key "api.holysheep.ai deepseek-v3.2": circuit open (probes from 2026-11-30T12:00:30Z)
var ErrCircuitOpen = errors.New("circuit open")

// Defaults for the zero fields of BreakerConfig.
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinCalls            = 20
	DefaultRatioWindow         = 30 * time.Second
	DefaultCoolDown            = 30 * time.Second
	DefaultProbes              = 3
)

// maxProbes bounds BreakerConfig.Probes.
const maxProbes = 1000

// BreakerConfig configures a Breaker; NewBreaker copies it. The zero value
// is usable: every zero field means the documented default.
//
// A circuit counts an attempt as failed when the provider answered 5xx
// (529 included; not 501 or 505, which say the request is wrong), when
// the connection failed or was reset (its host name not found included),
// when the attempt timed out (RetryPolicy.AttemptTimeout), when an
// answer's body broke off (a chat stream that ended neither with its
// terminal event nor at an error included; one that broke off after its
// end was answered in full, a success), or when a chat stream that ended
// said the provider failed mid-generation: a Responses stream ended with
// response.failed, or a chat stream sent an error before its end (data:
// [DONE], message_stop) or ended at one (no data line after it: Anthropic
// ends a stream that fails so, with its error event, OpenAI with its
// error chunk or event), whose code is a 5xx but 501 and 505
// (vLLM's InternalServerError, code 500) or whose type or code is
// server_error, internal_error, InternalServerError, api_error or
// overloaded_error (Anthropic's error event; the last error before the
// end decides). The caller's errors (a 4xx, 501, 505, a response.failed
// for any other code: invalid_prompt, an image it could not read; such an
// error in a chat stream, or one that cannot be read), a 429 (and a
// response.failed or a stream's error with code 429,
// rate_limit_exceeded, rate_limit_error or RateLimitError), an attempt a
// layer below refused and one the caller's own context ended count
// neither way: a bad request is refused before any model runs, often at
// the edge of a provider whose models are down. Any other answer is a
// success. A 2xx answer's outcome is known when its body has been read to
// its end or closed.
type BreakerConfig struct {
	// ConsecutiveFailures opens a circuit after this many failures in a
	// row, however far apart, when the provider was healthy before them.
	// For one already failing often (over 5% of at least MinCalls calls
	// in RatioWindow, DefaultMinCalls when the ratio rule is off) the run
	// must be as unlikely for it as this many are for a healthy one: at
	// 20% failures, 10 for the default 5. A provider
	// is far more often degraded than down; with a fixed run, one failing
	// a request in five would open its circuit every few thousand
	// attempts. 0 means DefaultConsecutiveFailures; negative turns this
	// rule off.
	ConsecutiveFailures int
	// FailureRatio opens a circuit when at least this fraction of the
	// calls of the last RatioWindow failed, once there were at least
	// MinCalls. 0 means DefaultFailureRatio; otherwise it must be in
	// (0, 1].
	FailureRatio float64
	// MinCalls is the fewest calls in RatioWindow the ratio is judged on.
	// 0 means DefaultMinCalls; negative turns the ratio rule off.
	MinCalls int
	// RatioWindow is how far back the ratio looks; it forgets a tenth at
	// a time. 0 means DefaultRatioWindow.
	RatioWindow time.Duration
	// CoolDown is how long an open circuit refuses requests before it lets
	// probes through. 0 means DefaultCoolDown.
	CoolDown time.Duration
	// Probes is how many requests a half-open circuit lets through at a
	// time; it closes when that many have succeeded, and opens again when
	// that many have failed first (a failed probe's place goes to another
	// request), so that one failure of a provider that is degraded but
	// alive does not reopen it. Probes that have not answered within
	// CoolDown are given up for lost and others go. 0 means DefaultProbes.
	Probes int

	// Key names the circuit a request belongs to, given the request and
	// the model that runs it: the Azure OpenAI deployment or the engine
	// its path names (/openai/deployments/{name}/..., /engines/{name}/...),
	// else the model its body names (a form's model field too; "" when
	// none). nil means the request
	// URL's host and that model, as "api.holysheep.ai deepseek-v3.2": a
	// provider is often down for one model (or deployment) and not the
	// others. Keys appear in
	// errors, events and logs: keep secrets out of them. It is called from
	// the goroutines of concurrent requests. A key longer than 256 bytes
	// (a gateway's tenant may name a model of a megabyte) is cut to its
	// first 256 bytes or fewer, followed by "... sha256:" and 32 hex
	// digits of the SHA-256 of the whole key; StatsOf takes either.
	//
	// A circuit is forgotten once it is as a new one would be and unused
	// for a RatioWindow; one with a run of failures, or open, is kept
	// until then (see Breaker.Stats). When circuits pile up, as when a
	// gateway's tenants name the model and a flood of made-up names each
	// fail, a new key finding twice as many circuits as the last sweep
	// kept (and at least 1024) first forgets every circuit unused for a
	// RatioWindow that refuses nothing: closed, whatever its run of
	// failures; open with its cool-down over; half-open with no probe
	// sent for a CoolDown. A real key used less often than that loses its
	// run, which delays its opening while the flood lasts. An open
	// circuit in its cool-down is always kept, and refuses until the
	// cool-down ends: the Breaker holds at most about twice the circuits
	// used within the last RatioWindow or CoolDown, the longer (some
	// 0.6 KB each, plus the key).
	Key func(req *http.Request, model string) string

	// AllowUnterminatedStreams turns off the stream check. By default
	// (false) a chat stream — an event stream answering a request to a
	// path ending in /completions, /messages or /responses — that ends
	// without its terminal event (data: [DONE], Anthropic's message_stop,
	// the Responses API's response.completed, response.incomplete or
	// response.failed; an error that is a stream's last data line ends it
	// too, and counts by that error), or an image stream (/images/generations,
	// /images/edits) without image_generation.completed or
	// image_edit.completed, reaches the reader as an error wrapping
	// io.ErrUnexpectedEOF instead of a clean end, and counts as a failure.
	// A compressed stream (when the caller set Accept-Encoding itself) is
	// not checked. A stream not checked (any, when this is set) counts a
	// success at its end, whatever its response.failed or errors say. Set
	// it for a provider whose chat streams never send one.
	AllowUnterminatedStreams bool

	// MaxBufferedBody bounds how much of a request body the Breaker reads
	// to find the model, when no Budget outside has read it, and how many
	// bytes a gzip body (Content-Encoding: gzip) is decompressed to for
	// it. 0 means DefaultMaxBufferedBody; a longer body is keyed without a
	// model, as is one compressed otherwise.
	MaxBufferedBody int64

	// OnStateChange, when set, is called after each state change of a
	// circuit, outside the Breaker's locks (it may call Stats). A
	// circuit's changes arrive one at a time, in the order they happened:
	// each from the goroutine of the request that caused it, unless
	// another goroutine is announcing that circuit's earlier changes then,
	// which announces this one too, after them. Different circuits'
	// changes may arrive concurrently. It must be quick and safe for
	// concurrent use.
	OnStateChange func(BreakerEvent)
	// Logger, when set, receives a warning when a circuit opens and an
	// info record when it turns half-open or closes, in the order and from
	// the goroutine OnStateChange is called in. nil means silent.
	Logger *slog.Logger
}

// BreakerEvent is a state change of one circuit, for
// BreakerConfig.OnStateChange. It is a plain value, safe to keep.
type BreakerEvent struct {
	Key      string       // the circuit's key
	From, To CircuitState // the states before and after
	Reason   string       // why, such as "5 consecutive failures" or "cool-down over"
	Time     time.Time    // when, on the Breaker's clock
}

// BreakerStats is the state and counts of one circuit, from Breaker.Stats
// or Breaker.StatsOf.
type BreakerStats struct {
	Key   string       // the circuit's key
	State CircuitState // its state now
	// OpenUntil is when an open circuit lets probes through (on the next
	// request after it); zero unless State is CircuitOpen.
	OpenUntil time.Time
	// Calls and Failures count the outcomes of the last RatioWindow,
	// while closed.
	Calls, Failures int
	// ConsecutiveFailures is the current run of failures.
	ConsecutiveFailures int
	// Opens counts the times the circuit opened; Refused the requests it
	// refused with ErrCircuitOpen.
	Opens, Refused int64
}

// Breaker is a Layer that stops sending requests to a provider that is
// down. It keeps a circuit per key (host and model by default): a closed
// circuit counts the outcomes of the attempts through it and opens on a
// run of failures or a high failure ratio; an open circuit refuses
// requests at once with ErrCircuitOpen, sending nothing, until a cool-down
// has passed; then a few probes go, and the circuit closes when they
// succeed. BreakerConfig says what counts as a failure.
//
// Place it inside the Retrier, above the Budget (Retrier → Breaker →
// Budget → Limiter) so that every attempt counts and a refusal costs
// neither a retry nor a reservation; see the package documentation. An
// answer that comes when its circuit is open (the failure that opened it,
// or another attempt's that was out then) is marked X-Should-Retry: false,
// and the error of such an attempt (a connection failure, a timeout) is
// marked too, so that the Retrier returns it without waiting for a retry
// the circuit would refuse.
//
// Make a Breaker with NewBreaker; the zero Breaker is not usable: its Wrap
// fails every request, unsent, naming the constructor. A Breaker is safe for
// concurrent use by multiple goroutines; share one per provider, or per
// process, since its circuits are per key.
type Breaker struct {
	cfg BreakerConfig // with defaults
	now func() time.Time

	mu        sync.RWMutex
	circuits  map[string]*circuit
	nextSweep time.Time
	// sweeping is closed when the sweep under way ends; nil when none is.
	sweeping chan struct{}
	// found, if set, is called between a sweep's two passes (tests).
	found func()
	// crowd is how many circuits a new one finds that make it sweep the
	// stale ones first (see circuit).
	crowd int
}

// NewBreaker validates c and returns a Breaker, or an error (prefixed
// "httpguard: breaker:") naming the invalid field.
func NewBreaker(c BreakerConfig) (*Breaker, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("httpguard: breaker: %w", err)
	}
	return &Breaker{cfg: c.withDefaults(), now: readClock, circuits: make(map[string]*circuit)}, nil
}

func (c *BreakerConfig) validate() error {
	switch {
	case c.FailureRatio != 0 && !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		return fmt.Errorf("FailureRatio must be in (0, 1], got %v", c.FailureRatio)
	case c.ConsecutiveFailures < 0 && c.MinCalls < 0:
		return errors.New("ConsecutiveFailures and MinCalls are both negative: no rule would ever open a circuit")
	case c.RatioWindow < 0:
		return fmt.Errorf("RatioWindow must be >= 0, got %v", c.RatioWindow)
	case c.CoolDown < 0:
		return fmt.Errorf("CoolDown must be >= 0, got %v", c.CoolDown)
	case c.Probes < 0 || c.Probes > maxProbes:
		return fmt.Errorf("Probes must be in [0, %d], got %d", maxProbes, c.Probes)
	case c.MaxBufferedBody < 0:
		return fmt.Errorf("MaxBufferedBody must be >= 0, got %d", c.MaxBufferedBody)
	}
	return nil
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.MinCalls == 0 {
		c.MinCalls = DefaultMinCalls
	}
	if c.RatioWindow == 0 {
		c.RatioWindow = DefaultRatioWindow
	}
	if c.CoolDown == 0 {
		c.CoolDown = DefaultCoolDown
	}
	if c.Probes == 0 {
		c.Probes = DefaultProbes
	}
	if c.MaxBufferedBody == 0 {
		c.MaxBufferedBody = DefaultMaxBufferedBody
	}
	return c
}

// Stats returns the state and counts of every circuit in use, ordered by
// key. Circuits that are as new ones would be (closed, no run of failures
// that could open them) and unused for a RatioWindow are forgotten, with
// their counts; a circuit with a run of failures (ConsecutiveFailures
// not turned off), or open, is kept until it is so, since the run counts
// however far apart its failures come, unless circuits pile up (see
// BreakerConfig.Key).
func (b *Breaker) Stats() []BreakerStats {
	now := b.now()
	before := now.Add(-b.cfg.RatioWindow)
	b.mu.RLock()
	out := make([]BreakerStats, 0, len(b.circuits))
	for _, c := range b.circuits {
		if !c.idle(&b.cfg, now, before) { // kept until the next sweep, but forgotten
			out = append(out, c.stats(now))
		}
	}
	b.mu.RUnlock()
	slices.SortFunc(out, func(x, y BreakerStats) int { return cmp.Compare(x.Key, y.Key) })
	return out
}

// StatsOf returns the state and counts of the circuit of key, as Stats
// would list it, and false when Stats would not list it (no request used
// key, or its circuit is forgotten). Unlike Stats, it costs the same
// however many circuits the Breaker holds.
func (b *Breaker) StatsOf(key string) (BreakerStats, bool) {
	now := b.now()
	b.mu.RLock()
	c := b.circuits[key] // a key in full, or as Stats and events give it, cut
	if c == nil && len(key) > maxKeyLen {
		c = b.circuits[string(boundKey([]byte(key)))]
	}
	b.mu.RUnlock()
	if c == nil || c.idle(&b.cfg, now, now.Add(-b.cfg.RatioWindow)) {
		return BreakerStats{}, false
	}
	return c.stats(now), true
}

// Wrap returns a RoundTripper that sends each request through next (nil
// means http.DefaultTransport) unless its circuit is open. It forwards
// CloseIdleConnections to next.
func (b *Breaker) Wrap(next http.RoundTripper) http.RoundTripper {
	if b == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	if b.circuits == nil {
		return zeroBreaker
	}
	next = orDefault(next)
	bound := boundsResends(next)
	return &breakerTransport{b: b, next: next, bound: bound}
}

type breakerTransport struct {
	b    *Breaker
	next http.RoundTripper
	// bound is set over net/http's own transport, which would send a
	// request again on its own, at once and without end, to a provider
	// resetting every HTTP/2 stream with PROTOCOL_ERROR, until the
	// caller's deadline, which says nothing of the provider: each goes
	// down as a Retrier's attempt (see sendBounded), and such a resend
	// fails it, a failure.
	bound bool
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *breakerTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	if req.URL == nil {
		closeRequestBody(req)
		return nil, Refuse(fmt.Errorf("httpguard: breaker: %w", errNoURL))
	}
	now := b.now()
	send, c, err := b.circuitOf(req, now)
	if err != nil {
		closeRequestBody(req)
		return nil, Refuse(err)
	}
	p, ok, changed := c.allow(&b.cfg, now)
	if changed {
		b.announceBeforeSending(c, p, ok, send)
	}
	if !ok {
		closeRequestBody(send)
		return nil, Refuse(c.refusal())
	}
	resp, err := sendDown(t.next, t.bound, send)
	switch {
	case err != nil:
		o := judgeError(send.Context(), err)
		if cancelClosed(req) {
			o = outcomeIgnored // the caller's end, as by its context
		}
		if b.reportOpen(c, p, o, nil) {
			// As for an answer below: a retry would wait its backoff
			// only to be refused.
			err = &openedCircuit{err}
		}
		return nil, err
	case resp == nil:
		b.report(c, p, outcomeIgnored)
		return nil, fmt.Errorf("httpguard: breaker: %w", errNoResponse)
	case resp.StatusCode/100 != 2 || resp.Body == nil || resp.Body == http.NoBody:
		if b.reportOpen(c, p, judgeStatus(resp.StatusCode), resp.Body) {
			// A retry would wait its backoff only to be refused: the
			// Retrier above hands this answer on at once instead.
			if resp.Header == nil {
				resp.Header = make(http.Header)
			}
			resp.Header.Set("X-Should-Retry", "false")
		}
		return resp, nil
	}
	b.watch(send, resp, c, p)
	return resp, nil
}

// openedCircuit is the error of an attempt that ended with its circuit
// open (its failure opened it, or another's while it was out): the error
// itself, which DefaultClassifier does not retry (see X-Should-Retry in
// stack.go).
type openedCircuit struct{ err error }

func (e *openedCircuit) Error() string { return e.err.Error() }
func (e *openedCircuit) Unwrap() error { return e.err }

// Timeout reports whether the attempt's error is a timeout: http.Client's
// *url.Error asks only the error it wraps directly, which is this one when
// no Retrier is above (as RetryError.Timeout does).
func (e *openedCircuit) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// refusal is the error of a request the circuit refused.
func (c *circuit) refusal() error {
	c.mu.Lock()
	state, until := c.state, c.until
	c.mu.Unlock()
	if state == CircuitHalfOpen {
		// Another probe goes when one answers, or once they are given up
		// for lost: the latest a retry must wait.
		return fmt.Errorf("httpguard: breaker: key %q: %w (half-open, its probes are out; probes from %s at the latest)",
			c.key, ErrCircuitOpen, secondUp(until).UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("httpguard: breaker: key %q: %w (probes from %s)", c.key, ErrCircuitOpen, secondUp(until).UTC().Format(time.RFC3339))
}

// secondUp returns t rounded up to the second, as a refusal names it: a
// caller that retries at the time named is not refused again.
func secondUp(t time.Time) time.Time {
	if s := t.Truncate(time.Second); !s.Equal(t) {
		return s.Add(time.Second)
	}
	return t
}

// judgeStatus is what an answer's status says of the provider. A caller's
// error (4xx, and 501 and 505, which say the request is wrong) says
// nothing: it is found before any model runs, often at the provider's edge
// while the servers behind it are down, so that callers sending bad
// requests must neither break a run of failures, nor thin out the failure
// ratio, nor pass as probes and close a circuit. A 429 is the Limiter's
// signal, not an outage.
func judgeStatus(status int) outcome {
	switch {
	case status == http.StatusNotImplemented || status == http.StatusHTTPVersionNotSupported || status >= 400 && status < 500:
		return outcomeIgnored
	case status >= 500:
		return outcomeFailure
	}
	return outcomeSuccess
}

// cancelClosed reports whether req's Cancel channel, which net/http still
// honours (deprecated for the request's context), is closed.
func cancelClosed(req *http.Request) bool {
	if req.Cancel == nil {
		return false
	}
	select {
	case <-req.Cancel:
		return true
	default:
		return false
	}
}

// judgeError is what a transport error says of the provider: a connection
// failure or an attempt timeout is a failure, and so is a host name that
// does not exist, which DefaultClassifier does not retry (asking again
// will not create it) but which puts the provider out of this client's
// reach as surely as refused connections do: the Fallback moves on from
// it, and an open circuit spares each request the lookup. A refusal
// (nothing sent), the caller's own end, and errors of the request itself
// (a bad URL or header, an untrusted certificate: what DefaultClassifier
// does not retry) say nothing. Once ctx has ended, err may be its cause,
// the caller's (errgroup's first error: a sibling's attempt timeout,
// say): only an attempt timer's end is then the provider's.
func judgeError(ctx context.Context, err error) outcome {
	switch {
	case IsRefusal(err):
		return outcomeIgnored
	case attemptTimedOut(ctx):
		return outcomeFailure
	case ctx.Err() != nil:
		if context.Cause(ctx) == errAttemptTimedOut { // an outer Retrier's timer
			return outcomeFailure
		}
		return outcomeIgnored
	case errors.Is(err, ErrAttemptTimeout):
		return outcomeFailure
	}
	if retry, _ := retryTransportError(context.Background(), err); retry || hostNotFound(err) {
		return outcomeFailure
	}
	return outcomeIgnored
}

// attemptTimedOut reports whether ctx is an attempt a Retrier outside
// ended for its AttemptTimeout (see the attempt timer in stack.go).
func attemptTimedOut(ctx context.Context) bool {
	a, _ := ctx.Value(attemptTimerKey{}).(*attemptTimer)
	return a != nil && a.state.Load() == timerFired
}

// circuitOf returns the request to send (req, or a copy whose body replays
// the bytes read) and the circuit of its key, made on first use.
func (b *Breaker) circuitOf(req *http.Request, now time.Time) (*http.Request, *circuit, error) {
	var buf [128]byte
	if req.Body == nil || req.Body == http.NoBody {
		return req, b.circuit(b.appendKey(buf[:0], req, nil, false), now), nil
	}
	if p, ok := parsedChat(req); ok { // a Budget outside read it already
		return req, b.circuit(b.appendModelKey(buf[:0], req, p.runs), now), nil
	}
	if req.GetBody == nil {
		send, body, err := replayableCtx(req, b.cfg.MaxBufferedBody)
		if err != nil && err != errBodyTooLarge {
			return nil, nil, fmt.Errorf("httpguard: breaker: reading the request body: %w", err)
		}
		raw, escaped := bodyModel(body, req.Header, b.cfg.MaxBufferedBody)
		return send, b.circuit(b.appendKey(buf[:0], req, raw, escaped), now), nil
	}
	pooled := getBodyBuffer()
	body, err := readGetBody(req, b.cfg.MaxBufferedBody, *pooled)
	defer func() { putBodyBuffer(pooled, body) }()
	if err != nil && err != errBodyTooLarge {
		return nil, nil, fmt.Errorf("httpguard: breaker: reading the request body: %w", err)
	}
	var raw []byte
	var escaped bool
	if err == nil {
		raw, escaped = bodyModel(body, req.Header, b.cfg.MaxBufferedBody)
	}
	return withRewindingBody(req, err != nil), b.circuit(b.appendKey(buf[:0], req, raw, escaped), now), nil
}

// appendKey appends the key of req, whose body names the model raw (JSON
// string content, escaped when it holds escapes), to dst.
func (b *Breaker) appendKey(dst []byte, req *http.Request, raw []byte, escaped bool) []byte {
	if d := runningModel(req, ""); d != "" {
		return b.appendModelKey(dst, req, d)
	}
	if b.cfg.Key != nil || escaped {
		model := string(raw)
		if escaped {
			model = string(appendUnquoted(nil, raw))
		}
		return b.appendModelKey(dst, req, model)
	}
	return append(append(append(dst, req.URL.Host...), ' '), raw...)
}

// appendModelKey appends the key of req, run by model, to dst.
func (b *Breaker) appendModelKey(dst []byte, req *http.Request, model string) []byte {
	if b.cfg.Key != nil {
		return append(dst, b.cfg.Key(req, model)...)
	}
	return append(append(append(dst, req.URL.Host...), ' '), model...)
}

// maxKeyLen bounds a circuit's key. A gateway's tenant names the model,
// which names the circuit: a key longer than this (a model name of a
// megabyte) is cut, so that it holds little memory and reads short in
// errors, events and logs.
const maxKeyLen = 256

// boundKey returns key, or, when it is longer than maxKeyLen, its first
// maxKeyLen bytes or fewer (cut between runes) followed by the first 128
// bits of the SHA-256 of the whole key: two long keys that differ past
// the cut are still two circuits. A key so cut is longer than maxKeyLen,
// so that no key kept whole (a model named after another's cut key) can
// reach its circuit.
func boundKey(key []byte) []byte {
	if len(key) <= maxKeyLen {
		return key
	}
	n := maxKeyLen
	for n > 0 && !utf8.RuneStart(key[n]) {
		n--
	}
	sum := sha256.Sum256(key)
	const mark = "... sha256:"
	out := make([]byte, 0, n+len(mark)+hex.EncodedLen(16))
	out = append(append(out, key[:n]...), mark...)
	return hex.AppendEncode(out, sum[:16])
}

// boundString is boundKey of a string: s itself when it is short enough.
// A Limiter's key is so bounded, as a circuit's is: a tenant's model name
// of a megabyte would otherwise be held twice by its key (its id and its
// name), sent to a shared store as part of its name, and quoted whole in
// errors and events.
func boundString(s string) string {
	if len(s) <= maxKeyLen {
		return s
	}
	return string(boundKey([]byte(s)))
}

// circuit returns the circuit of key, made on first use.
func (b *Breaker) circuit(key []byte, now time.Time) *circuit {
	key = boundKey(key)
	for {
		b.mu.RLock()
		c, sweeping := b.circuits[string(key)], b.sweeping
		b.mu.RUnlock()
		if c != nil {
			return c
		}
		if sweeping != nil {
			<-sweeping // a new circuit waits for the sweep, as it would for b.mu
			continue
		}
		if c = b.newCircuit(key, now); c != nil {
			return c
		}
	}
}

// newCircuit returns the circuit of key, made if the Breaker has none, or
// nil after it swept the circuits: the caller asks again.
func (b *Breaker) newCircuit(key []byte, now time.Time) *circuit {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.circuits[string(key)]; c != nil || b.sweeping != nil {
		return c
	}
	if !now.Before(b.nextSweep) {
		b.sweepApart(now, false)
		b.nextSweep = now.Add(b.cfg.RatioWindow)
		// Lowered when it dropped many, never raised: a run of failures
		// keeps its circuit from this sweep, and a flood of such circuits
		// would otherwise never find the Breaker crowded.
		b.crowd = max(min(b.crowd, 2*len(b.circuits)), crowdedKeys)
		return nil
	}
	if len(b.circuits) >= b.crowd {
		// Circuits pile up, as when a caller names a new model in every
		// request (a gateway's tenant names the model) and each fails:
		// those unused for a RatioWindow go now, even with a run of
		// failures, or open with their cool-down over. At most once per
		// doubling of the circuits, so that the sweeps cost a few steps
		// per circuit made.
		b.sweepApart(now, true)
		b.crowd = max(2*len(b.circuits), crowdedKeys)
		return nil
	}
	c := newCircuit(string(key), &b.cfg, now)
	b.circuits[c.key] = c
	return c
}

// sweepApart forgets the circuits that are as new ones would be and were
// not used for a RatioWindow, so that many keys do not grow memory without
// bound; crowded, also those unused for a RatioWindow that refuse nothing
// (see circuit.stale). It does not hold b.mu for the whole sweep (see
// sweepInChunks): a circuit used in between is kept, and new circuits wait
// for it (see b.sweeping). b.mu is held, and is again on return.
func (b *Breaker) sweepApart(now time.Time, crowded bool) {
	before := now.Add(-b.cfg.RatioWindow)
	sweepInChunks(&b.mu, &b.sweeping, b.found, b.circuits,
		func(c *circuit) bool { return c.droppable(&b.cfg, now, before, crowded) },
		func(c *circuit) string { return c.key },
		func(c *circuit) {
			if c.drop(&b.cfg, now, before, crowded) {
				delete(b.circuits, c.key)
			}
		})
}

// report counts the outcome of an attempt the circuit let through with p.
func (b *Breaker) report(c *circuit, p pass, o outcome) {
	if c.report(&b.cfg, p, o, b.now()) {
		b.announce(c)
	}
}

// reportOpen is report for an attempt that can be retried: it reports
// whether the circuit is open once the outcome is counted, so that a retry
// would be refused. The attempts out when a circuit opens end to find it
// open as much as the one whose failure opened it. body is the answer's
// body, nil after an error (see announceClosing).
func (b *Breaker) reportOpen(c *circuit, p pass, o outcome, body io.Closer) bool {
	now := b.now()
	if c.report(&b.cfg, p, o, now) {
		b.announceClosing(c, body)
	}
	return c.refuses(now)
}

// announce tells the hook and the logger of the circuit's state changes
// not yet announced, in the order they happened, outside c.mu. One
// goroutine at a time announces a circuit's changes: a change made while
// another goroutine announces is left for that one, which announces until
// none is left.
func (b *Breaker) announce(c *circuit) {
	c.mu.Lock()
	if c.announcing {
		c.mu.Unlock()
		return
	}
	c.announcing = true
	locked := true
	defer func() { // also when a hook panics (an http.Server recovers it): the next change takes the turn
		if !locked {
			c.mu.Lock()
		}
		clear(c.events)
		c.events = c.events[:0]
		c.announcing = false
		c.mu.Unlock()
	}()
	for i := 0; i < len(c.events); i++ {
		e := c.events[i]
		c.mu.Unlock()
		locked = false
		b.tell(e)
		c.mu.Lock()
		locked = true
	}
}

// announceClosing is announce for the change an answer made, whose body
// is closed when a hook panics (an http.Server recovers it): the caller
// never gets the answer, or is closing it, and its connection would be
// held for good.
func (b *Breaker) announceClosing(c *circuit, body io.Closer) {
	announced := false
	defer func() {
		if !announced && body != nil {
			body.Close()
		}
	}()
	b.announce(c)
	announced = true
}

// announceBeforeSending is announce for the change a request made as the
// circuit let it through with p (ok) or refused it, before it is sent.
// When the hook panics, the request is lost: the probe slot it took goes
// back, or the circuit would refuse every request for a cool-down, and its
// body is closed, as a RoundTripper must close it.
func (b *Breaker) announceBeforeSending(c *circuit, p pass, ok bool, req *http.Request) {
	announced := false
	defer func() {
		if announced {
			return
		}
		if ok {
			b.report(c, p, outcomeIgnored)
		}
		closeRequestBody(req)
	}()
	b.announce(c)
	announced = true
}

// tell tells the hook and the logger of one state change.
func (b *Breaker) tell(e BreakerEvent) {
	if b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(e)
	}
	l := b.cfg.Logger
	level := slog.LevelInfo
	if e.To == CircuitOpen {
		level = slog.LevelWarn
	}
	if l == nil || !l.Enabled(context.Background(), level) {
		return
	}
	l.LogAttrs(context.Background(), level, "httpguard: breaker: circuit "+e.To.String(),
		slog.String("key", e.Key), slog.String("from", e.From.String()), slog.String("reason", e.Reason))
}
