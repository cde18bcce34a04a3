package httpguard

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// This file is the Limiter: client-side token buckets for requests and model
// tokens, kept per key (host and model by default), that also follow what
// the server says (429s, Retry-After, x-ratelimit-* headers) and find the
// provider's real rate when it is below the configured one.
//
// The buckets live in a LimitStore (limitstore.go), which a fleet can
// share. What stays in the process, each key's queue and adaptive rate, is
// in limitkey.go.

// ErrRateLimited is returned, wrapped, when a request cannot get its turn
// within LimitConfig.MaxWait or before its context's deadline. The Limiter
// fails at once when it can tell the wait is too long; it never sleeps only
// to fail. The request was not sent.
//
// It reaches the caller through a *RetryError when a Retrier is outside,
// and a *url.Error from http.Client: test for it with errors.Is. When the
// turn was too far away, the error is a *LimitError, which names the key,
// what refused (the requests bucket, the tokens bucket or a server pause)
// and the wait; errors.As finds it. A request whose deadline passed while
// it waited fails with ErrRateLimited and context.DeadlineExceeded.
var ErrRateLimited = errors.New("rate limited")

// Defaults for the zero fields of LimitConfig and AdaptiveConfig.
const (
	// DefaultIdleTTL is how long a key's state is kept after its last use.
	DefaultIdleTTL = 10 * time.Minute
	// DefaultOutputEstimate is the number of output tokens a request that
	// sets no max_tokens is assumed to produce, until its real usage is
	// known.
	DefaultOutputEstimate = 1024
	// DefaultMaxPause caps a pause a server asks for, as the Retrier's
	// MaxServerDelay caps its waits.
	DefaultMaxPause = 60 * time.Second
	// DefaultDecreaseFactor is β: a 429 multiplies the request rate by it
	// (AWS SDK adaptive retry mode and CUBIC use 0.7).
	DefaultDecreaseFactor = 0.7
	// DefaultRecoveryScale is C, in requests/s per s³: after a decrease the
	// rate grows back as C·(t−K)³ + Wmax (CUBIC, AWS SDK's adaptive mode).
	DefaultRecoveryScale = 0.4
	// DefaultMinRequestsPerSecond is the floor decreases stop at (AWS SDK's
	// adaptive mode uses 0.5 requests/s).
	DefaultMinRequestsPerSecond = 0.5
)

// smallestPrompt is the prompt allowance, in tokens, a token limit must leave
// room for next to OutputEstimate: a TokensPerMinute below
// OutputEstimate+smallestPrompt could not admit an ordinary request.
const smallestPrompt = 100

// rateWindow is how far back a key's send rate is measured.
const rateWindow = time.Second

// sniffLen is how much of a body without GetBody is read to tell whether it
// is JSON; a body that is not is sent on without being read further.
const sniffLen = 512

// LimitConfig configures a Limiter; NewLimiter copies it. The zero
// LimitConfig limits neither requests nor tokens but still follows the
// server: it pauses a key while a response says its window is spent. Every
// field's zero value is documented with the field.
type LimitConfig struct {
	// RequestsPerSecond is the steady request rate allowed per key, each
	// attempt (retries included) counting one. 0 means no request limit.
	RequestsPerSecond float64
	// Burst is how many requests per key may go at once after a quiet
	// period. It must be at least 1 when RequestsPerSecond is set, and is
	// not used otherwise.
	Burst int
	// TokensPerMinute is the model tokens (prompt plus output) allowed per
	// key and minute, refilled continuously (TokensPerMinute/60 per second)
	// with a burst of TokensPerMinute. 0 means no token limit. A request
	// estimated above TokensPerMinute takes the whole burst: it waits for a
	// full bucket, then goes.
	TokensPerMinute int
	// OutputEstimate is the output tokens counted for a request whose body
	// sets no max_tokens, until its real usage is known. 0 means
	// DefaultOutputEstimate.
	OutputEstimate int64
	// MaxWait is the longest a request waits for its turn; a request that
	// would wait longer fails at once with ErrRateLimited. The request's
	// context deadline bounds the wait too. 0 means DefaultMaxWait; a
	// negative MaxWait means never wait.
	MaxWait time.Duration
	// Key names the bucket a request belongs to, given the request and the
	// model that runs it: the Azure OpenAI deployment or the engine its
	// path names (/openai/deployments/{name}/..., /engines/{name}/...),
	// else the model its body names ("" when none). nil means the request
	// URL's host and that model: each model of each provider (each Azure
	// deployment) has its own limits, as providers count them. The key appears in errors and
	// ThrottleEvents: keep secrets (API keys) out of it, or hash them. It is
	// called from the goroutines of concurrent requests, so it must be safe
	// for concurrent use. A model name or a key longer than 256 bytes is
	// cut and ends with a hash of the whole, as a Breaker's circuit key is.
	Key func(req *http.Request, model string) string
	// IdleTTL is how long an unused key's state is kept in the process.
	// Idle keys are dropped lazily, as requests come, so thousands of model
	// names do not grow memory without bound; once the keys pile up (twice
	// as many as the last sweep kept, and at least 1024), a new key drops
	// those idle for a second that hold nothing to remember (no pause, no
	// lowered rate, nobody queued), so that a caller naming a new model
	// per request keeps a second or two of keys, not IdleTTL's. 0 means
	// DefaultIdleTTL.
	IdleTTL time.Duration
	// MaxBufferedBody bounds how many bytes of a request body the Limiter
	// reads to estimate tokens, and, for a gzip body (Content-Encoding:
	// gzip or x-gzip), how many it reads compressed and how many it
	// decompresses. 0 means DefaultMaxBufferedBody. A JSON body longer
	// than that takes the whole token burst, keyed without its model; so
	// does a body compressed so that it cannot be read: otherwise (br,
	// zstd, deflate, gzip twice), past this bound, or not the gzip it says.
	MaxBufferedBody int64
	// IgnoreServer turns off following the server. By default (false) a 429
	// lowers the key's request rate (see Adaptive), unless it reports a
	// spent quota (insufficient_quota, as DefaultClassifier reads it), which
	// says nothing of the rate; a 429 pauses the whole key for the wait it
	// asks (retry-after-ms, Retry-After, a reset), and a response reporting
	// a spent window (x-ratelimit-*, anthropic-ratelimit-*) until the
	// reset. Two 429s that report no spent window (no remaining 0) pause
	// only their own request, through the Retrier: one among the few a
	// degraded provider sends (at most 6% of the key's requests in the last
	// second, the fleet's with an AdaptiveLimitStore, see Adaptive), and,
	// when the key's rate can be lowered (it
	// has one, above Adaptive.MinRequestsPerSecond) and the quota is not
	// spent, one whose wait is a Retry-After of one whole second that no
	// reset refines.
	IgnoreServer bool
	// MaxPause caps a pause a server asks for: a reset a year away pauses
	// the key for MaxPause, not a year. 0 means DefaultMaxPause.
	MaxPause time.Duration
	// Adaptive tunes how the request rate follows the provider's 429s. Its
	// zero value uses the defaults.
	Adaptive AdaptiveConfig
	// Store keeps the buckets and pauses; share one store (on Redis, say)
	// to share the limits across processes. nil means a
	// NewMemoryLimitStore of this Limiter's own. A store that is not a
	// TurnLimitStore is given back a request's whole overestimate, even
	// of tokens it has refilled since.
	Store LimitStore
	// OnThrottle, when set, is called for every wait, rejection, server
	// pause and rate decrease, from the goroutine of the request concerned.
	// It must be quick and safe for concurrent use.
	OnThrottle func(ThrottleEvent)
}

// AdaptiveConfig tunes how a Limiter finds a provider's real request rate
// when it is below LimitConfig.RequestsPerSecond, as the AWS SDK's adaptive
// retry mode does: a 429 cuts the key's rate to DecreaseFactor times the
// rate the provider was accepting its requests at (those sent in the last
// second less those answered 429), when that is below the key's rate,
// at most once per round (a 429 to a request sent before the last cut is
// not counted again), and only while the 429s are more than 6% of the
// requests the key sent in the last second (a degraded provider's few
// 429s, which it sends whatever the rate, cut nothing; a cut on a share
// under twice that, with no other cut within half a second before it,
// forgets its 429s, which may have passed it by chance);
// the rate then grows back along CUBIC's curve, C·(t−K)³ + Wmax, to
// RequestsPerSecond, never above. On a store that implements
// AdaptiveLimitStore, the rate, its rounds, the share of 429s and the rate
// accepted are the fleet's. The zero value uses the defaults. Without a
// RequestsPerSecond there is no rate to adapt.
type AdaptiveConfig struct {
	// DecreaseFactor is β, what a 429 multiplies the key's request rate by,
	// in (0, 1). 0 means DefaultDecreaseFactor.
	DecreaseFactor float64
	// RecoveryScale is C, how fast the rate grows back after a decrease, in
	// requests/s per s³. 0 means DefaultRecoveryScale.
	RecoveryScale float64
	// MinRequestsPerSecond is the rate decreases stop at (never above
	// RequestsPerSecond). 0 means DefaultMinRequestsPerSecond.
	MinRequestsPerSecond float64
}

func (c LimitConfig) withDefaults() LimitConfig {
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.IdleTTL == 0 {
		c.IdleTTL = DefaultIdleTTL
	}
	if c.OutputEstimate == 0 {
		c.OutputEstimate = DefaultOutputEstimate
	}
	if c.MaxBufferedBody == 0 {
		c.MaxBufferedBody = DefaultMaxBufferedBody
	}
	if c.MaxPause == 0 {
		c.MaxPause = DefaultMaxPause
	}
	a := &c.Adaptive
	if a.DecreaseFactor == 0 {
		a.DecreaseFactor = DefaultDecreaseFactor
	}
	if a.RecoveryScale == 0 {
		a.RecoveryScale = DefaultRecoveryScale
	}
	if a.MinRequestsPerSecond == 0 {
		a.MinRequestsPerSecond = DefaultMinRequestsPerSecond
	}
	if !math.IsInf(a.MinRequestsPerSecond, 1) { // left for validate to refuse
		a.MinRequestsPerSecond = min(a.MinRequestsPerSecond, c.RequestsPerSecond)
	}
	return c
}

// validate checks a config with its defaults filled in.
func (c *LimitConfig) validate() error {
	bad := func(name string, v any, want string) error {
		return fmt.Errorf("httpguard: limiter: %s must be %s, got %v", name, want, v)
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	a := c.Adaptive
	switch {
	case !finite(c.RequestsPerSecond) || c.RequestsPerSecond < 0:
		return bad("RequestsPerSecond", c.RequestsPerSecond, "a finite number >= 0")
	case c.Burst < 0:
		return bad("Burst", c.Burst, ">= 0")
	case c.RequestsPerSecond > 0 && c.Burst < 1:
		return bad("Burst", c.Burst, ">= 1 when RequestsPerSecond is set")
	case c.TokensPerMinute < 0:
		return bad("TokensPerMinute", c.TokensPerMinute, ">= 0")
	case c.OutputEstimate < 0:
		return bad("OutputEstimate", c.OutputEstimate, ">= 0")
	case c.IdleTTL < 0:
		return bad("IdleTTL", c.IdleTTL, ">= 0")
	case c.MaxBufferedBody < 0:
		return bad("MaxBufferedBody", c.MaxBufferedBody, ">= 0")
	case c.MaxPause < 0:
		return bad("MaxPause", c.MaxPause, ">= 0")
	case !finite(a.DecreaseFactor) || a.DecreaseFactor <= 0 || a.DecreaseFactor >= 1:
		return bad("Adaptive.DecreaseFactor", a.DecreaseFactor, "in (0, 1)")
	case !finite(a.RecoveryScale) || a.RecoveryScale < 0:
		return bad("Adaptive.RecoveryScale", a.RecoveryScale, "a finite number >= 0")
	case !finite(a.MinRequestsPerSecond) || a.MinRequestsPerSecond < 0:
		return bad("Adaptive.MinRequestsPerSecond", a.MinRequestsPerSecond, "a finite number >= 0")
	case c.TokensPerMinute > 0 && c.OutputEstimate > int64(c.TokensPerMinute)-smallestPrompt:
		return fmt.Errorf("httpguard: limiter: TokensPerMinute %d is too small for a request with OutputEstimate %d output tokens and a short prompt: it must be at least %d",
			c.TokensPerMinute, c.OutputEstimate, c.OutputEstimate+smallestPrompt)
	}
	if s, ok := c.Store.(*MemoryLimitStore); ok && (s == nil || s.keys == nil) {
		// Its methods would panic in the caller's goroutine.
		return errors.New("httpguard: limiter: Store: make a MemoryLimitStore with NewMemoryLimitStore; the zero value is not usable")
	}
	return nil
}

// ThrottleReason says why a ThrottleEvent happened. Its values are the
// constants below; they are plain strings, fit for logs and metric labels.
type ThrottleReason string

// The reasons of ThrottleEvent.
const (
	// ThrottleRequests: the request waited for the requests bucket.
	ThrottleRequests ThrottleReason = "requests"
	// ThrottleTokens: the request waited for the tokens bucket.
	ThrottleTokens ThrottleReason = "tokens"
	// ThrottlePaused: the request waited for a pause the server asked for.
	ThrottlePaused ThrottleReason = "paused"
	// ThrottleServerPause: a response paused the key for Wait.
	ThrottleServerPause ThrottleReason = "server-pause"
	// ThrottleSlowDown: a 429 lowered the key's request rate to Rate.
	ThrottleSlowDown ThrottleReason = "slow-down"
)

// ThrottleEvent describes one throttling decision, for OnThrottle. It is a
// plain value, safe to keep and to pass between goroutines.
type ThrottleEvent struct {
	// Key is the bucket's key (by default host and model).
	Key string
	// Reason says what happened.
	Reason ThrottleReason
	// Wait is how long the request waits (or would have had to wait, when
	// Rejected), or how long a server pause lasts.
	Wait time.Duration
	// Rejected is true when the request failed with ErrRateLimited instead
	// of waiting.
	Rejected bool
	// Rate is the key's request rate after a ThrottleSlowDown, in requests
	// per second; 0 otherwise.
	Rate float64
}

// LimiterStats are a Limiter's counters since it was made, as returned by
// Limiter.Stats; the zero value means nothing happened yet.
type LimiterStats struct {
	// Requests counts the attempts that reached the Limiter: each once its
	// body is read and its key found, before it waits for its turn, or,
	// when refused before that (no URL, a body that could not be read),
	// as it is refused. A request counted in a key a sweep had just
	// dropped, having found the key a moment before, shows once it takes
	// the Limiter's lock to move its count to the Limiter's own total.
	Requests uint64
	// Throttled counts attempts that waited before being sent.
	Throttled uint64
	// Rejected counts attempts that failed with ErrRateLimited.
	Rejected uint64
	// Canceled counts attempts whose context ended while they waited.
	Canceled uint64
	// ServerPauses counts responses that paused their key.
	ServerPauses uint64
	// SlowDowns counts 429s that lowered their key's request rate.
	SlowDowns uint64
	// StoreErrors counts the LimitStore calls that failed.
	StoreErrors uint64
	// Waited is the total of the waits attempts were given; a wait cut short
	// by its context counts in full.
	Waited time.Duration
	// Keys is the number of keys whose queue and rate this process keeps
	// now.
	Keys int
}

// A Limiter is a Layer that paces requests per key with two token buckets,
// one for requests and one for model tokens, follows the server's rate limit
// signals, and lowers a key's request rate to what the provider really
// allows. Make one with NewLimiter; the zero Limiter is not usable: its Wrap
// fails every request, unsent, naming the constructor. A Limiter is safe for
// concurrent use, and one Limiter may wrap several transports, which then
// share its buckets.
//
// Place it innermost (Retrier → Budget → Limiter → base): there every
// attempt, retries included, takes its turn. The time an attempt waits here
// counts against the caller's context, not against the Retrier's
// AttemptTimeout. A request that cannot have its turn in time fails with
// ErrRateLimited, marked by Refuse: nothing was sent, and a Retrier does
// not retry it. Requests to endpoints providers do not bill (see
// FreeEndpoint; of moderations, those a Budget lets pass unpriced), which
// they limit apart from the model's, take their turns in a key of their
// own ("host model free"), and no model tokens.
//
// Requests wait in a queue per key, in the order they came, spaced by the
// key's current rate, so neither the end of a server pause nor a lowered
// rate lets the waiting requests go at once; either moves the queue,
// keeping its order. For each attempt the Limiter reads a JSON body
// (whatever its Content-Type; the server still gets it byte for byte), a
// gzip body decompressed, to learn the model and estimate the tokens: the
// prompt plus max_tokens (or OutputEstimate) for each of its n
// completions. A form (an upload to /audio/transcriptions) is read for its
// model field alone, up to MaxBufferedBody, and counts no tokens. A body
// compressed so that it cannot be read takes the whole token burst (see
// MaxBufferedBody). Once the caller has read
// the answer's usage, the key is given back the overestimate or charged the
// underestimate; an answer without usage keeps the estimate.
type Limiter struct {
	cfg  LimitConfig
	toks bucket // the tokens bucket, the same for every key
	// reqs is the requests bucket at the configured rate, which a key's
	// turn taken without its mutex is limited by (see takeFast).
	reqs bucket

	// now and sleep are the clock; tests replace them. sleep is
	// sleepQueued.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration, wake <-chan struct{}) (woken bool, err error)

	own *MemoryLimitStore // cfg.Store when the config named none
	// fleet is cfg.Store when it keeps the adaptive rate for the fleet
	// (limitfleet.go); nil when the rate adapts in this process.
	fleet AdaptiveLimitStore
	// turns is cfg.Store, named by the config, when it tells its turns'
	// ends (see TurnLimitStore); nil otherwise.
	turns TurnLimitStore
	// ahead is cfg.Store, named by the config, when it takes turns ahead
	// of their time (see AheadLimitStore); nil otherwise.
	ahead AheadLimitStore

	mu        sync.RWMutex
	keys      map[keyID]*keyState
	crowd     int                       // from how many keys a new one sweeps before IdleTTL (see addKey); guarded by mu
	nextSweep atomic.Pointer[time.Time] // nil: at the first request
	sweeping  chan struct{}             // closed when the sweep under way ends; nil when none is; guarded by mu
	found     func()                    // if set, called between a sweep's two passes (tests)
	last      atomic.Pointer[keyState]  // the key used last

	// The counters, apart from the fields above, which every request
	// reads (see cacheLine). requests counts only the requests refused
	// before their key was known, and those of the keys swept: a key
	// counts its own (see keyState.requests).
	_                                       [cacheLine]byte
	requests, throttled, rejected, canceled atomic.Uint64
	serverPauses, slowDowns, storeErrors    atomic.Uint64
	waited                                  atomic.Int64
	// rtt and srtt are the round trip of the last ask of an
	// AheadLimitStore, as the Limiter's clock measured it, and their
	// smoothed mean (see measured): how far ahead it asks.
	rtt, srtt atomic.Int64
}

// NewLimiter returns a Limiter configured by c, or an error (prefixed
// "httpguard: limiter:") saying which field of c is invalid.
func NewLimiter(c LimitConfig) (*Limiter, error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	l := &Limiter{
		cfg:   c,
		now:   readClock,
		sleep: sleepQueued,
		keys:  make(map[keyID]*keyState),
	}
	if c.Store == nil {
		// The Limiter's own store is on the Limiter's clock, so that a turn
		// is asked of it at the reading the Limiter just made.
		l.own = newMemoryLimitStore(func() time.Time { return l.now() })
		l.cfg.Store = l.own
	}
	if as, ok := c.Store.(AdaptiveLimitStore); ok && c.RequestsPerSecond > 0 && !c.IgnoreServer {
		l.fleet = as
	}
	if ts, ok := c.Store.(TurnLimitStore); ok { // c.Store is the config's: nil for l.own
		l.turns = ts
	}
	if as, ok := c.Store.(AheadLimitStore); ok {
		l.ahead = as
	}
	if c.TokensPerMinute > 0 {
		l.toks = BucketLimit{Rate: float64(c.TokensPerMinute) / 60, Burst: int64(c.TokensPerMinute)}.bucket()
	}
	if c.RequestsPerSecond > 0 {
		l.reqs = BucketLimit{Rate: c.RequestsPerSecond, Burst: int64(c.Burst)}.bucket()
	}
	return l, nil
}

// Wrap returns a RoundTripper that paces requests through l before passing
// them to next (http.DefaultTransport when nil). It forwards
// CloseIdleConnections to next.
func (l *Limiter) Wrap(next http.RoundTripper) http.RoundTripper {
	if l == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	if l.cfg.Store == nil {
		return zeroLimiter
	}
	next = orDefault(next)
	bound := boundsResends(next)
	return &limitTransport{l: l, next: next, bound: bound}
}

// Stats returns l's counters. It is safe to call concurrently with requests.
func (l *Limiter) Stats() LimiterStats {
	l.mu.RLock()
	keys := len(l.keys)
	requests := l.requests.Load() // of the requests refused before their key was known, and of the keys swept
	for _, ks := range l.keys {
		requests += ks.requests.Load()
	}
	l.mu.RUnlock()
	return LimiterStats{
		Requests:     requests,
		Throttled:    l.throttled.Load(),
		Rejected:     l.rejected.Load(),
		Canceled:     l.canceled.Load(),
		ServerPauses: l.serverPauses.Load(),
		SlowDowns:    l.slowDowns.Load(),
		StoreErrors:  l.storeErrors.Load(),
		Waited:       time.Duration(l.waited.Load()),
		Keys:         keys,
	}
}

type limitTransport struct {
	l    *Limiter
	next http.RoundTripper
	// bound is set over net/http's own transport, whose resends it keeps
	// from going out without a turn (see sendBounded). Over any other a
	// layer below may send the request again from its GetBody (a Retrier
	// placed below), which a gate would refuse.
	bound bool
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport below.
func (t *limitTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	l := t.l
	if req.URL == nil {
		l.requests.Add(1)
		closeRequestBody(req)
		return nil, Refuse(fmt.Errorf("httpguard: limiter: %w", errNoURL))
	}
	send, parsed, model, toks, err := l.inspect(req)
	if err != nil {
		l.requests.Add(1)
		closeRequestBody(req)
		return nil, Refuse(err)
	}
	if parsed == nil {
		model = runningModel(req, model)
	}
	// A moderation is free by its model, as the Budget judges it: Mistral
	// bills its own, which take the model's turns and tokens.
	free, moderation := freeEndpointOf(req, parsed)
	free = free && (!moderation || freeModeration(model))
	if free {
		// Counting tokens and moderation bill nothing, and providers
		// limit them apart from the model's requests and tokens: they take
		// a turn in a key of their own, and none of the model's tokens.
		toks = 0
	}
	now := l.now()
	ks := l.key(req, model, free, now)
	l.count(ks)
	sentAt := now
	end, fast := l.takeFast(ks, toks, now)
	if !fast { // most turns are taken at once
		ctx, stop := withCancelChannel(req.Context(), req.Cancel)
		sentAt, end, err = l.acquire(ctx, ks, toks, now)
		stop()
		if err != nil {
			closeRequestBody(send)
			return nil, Refuse(err)
		}
	}
	// Each send takes a turn: net/http sends none again on its own.
	resp, err := sendDown(t.next, t.bound, send)
	if err != nil {
		if toks > 0 && (refusedBelow(send.Context(), err) || unsendableBelow(send.Context(), err)) {
			// Refused below (a gateway's Limiter under a tenant's), or by
			// net/http before sending (an invalid header): the request
			// was not sent, and its tokens go back. A refusal inside the
			// caller's cause is not one (see refusedBelow).
			c := tokenCorrection{ks: ks, estimate: toks, end: end}
			c.reportUsage(&Usage{}, true)
		}
		return nil, err
	}
	if resp == nil {
		return nil, fmt.Errorf("httpguard: limiter: %w", errNoResponse)
	}
	l.observe(send, parsed, ks, toks, resp, sentAt, end)
	return resp, nil
}

// inspect reads a request body that is a JSON object, whatever its
// Content-Type, for its model and token estimate. It returns the request to
// send, whose body replays the bytes read, and parsed, what a Budget above
// parsed of it (nil when no Budget vouches for req).
func (l *Limiter) inspect(req *http.Request) (send *http.Request, parsed *parsedRequest, model string, toks int64, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil, "", 0, nil
	}
	if p, ok := parsedChat(req); ok { // a Budget outside read it already
		return req, p, p.runs, l.tokens(&p.chat), nil
	}
	if req.GetBody != nil {
		var whole bool
		if model, toks, whole, err = l.inspectGetBody(req); err != nil {
			return req, nil, model, toks, err
		}
		return withRewindingBody(req, !whole), nil, model, toks, nil
	}
	type read struct {
		send  *http.Request
		model string
		toks  int64
		err   error
	}
	r, err := underContext(req.Context(), req.Body, false, func() read {
		send, model, toks, err := l.inspectBody(req)
		return read{send, model, toks, err}
	})
	if err != nil {
		return req, nil, "", 0, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	}
	return r.send, nil, r.model, r.toks, r.err
}

// freeEndpointOf is freeEndpoint(req), which parsed, when not nil, read
// already.
func freeEndpointOf(req *http.Request, parsed *parsedRequest) (free, moderation bool) {
	if parsed != nil {
		return parsed.free, parsed.moderation
	}
	return freeEndpoint(req)
}

// inspectGetBody reads a fresh copy of the body from req.GetBody, leaving
// req as it is. whole is false when it read only part of the copy.
func (l *Limiter) inspectGetBody(req *http.Request) (model string, toks int64, whole bool, err error) {
	rc, err := callGetBody(req.GetBody)
	if err != nil {
		return "", 0, false, fmt.Errorf("httpguard: limiter: GetBody: %w", err)
	}
	defer rc.Close()
	buf := getBodyBuffer()
	b, isJSON, err := readJSONBody(rc, (*buf)[:0], req.ContentLength, l.cfg.MaxBufferedBody)
	defer func() { putBodyBuffer(buf, b) }()
	switch {
	case err != nil && err != errNotJSON && err != errBodyTooLarge:
		return "", 0, false, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	case err == errNotJSON:
		if enc := contentEncoding(req.Header); !unencoded(enc) {
			src := &sourceReader{r: io.MultiReader(bytes.NewReader(b), rc)}
			return l.inspectEncoded(src, enc, req.ContentLength)
		}
		if form, boundary := formOf(req.Header); form == multipartForm || form == urlencodedForm {
			b, model, whole, err = l.inspectForm(b, rc, req.ContentLength, form, boundary)
			return model, 0, whole, err
		}
		return "", 0, false, nil
	case !isJSON:
		return "", 0, err == nil, nil
	case err == errBodyTooLarge:
		return "", l.toks.Burst, false, nil // see inspectBody
	}
	if err := checkLength(req.ContentLength, int64(len(b))); err != nil {
		// net/http refuses it, but only once it wrote the declared bytes:
		// a server may run a longer body cut to them.
		return "", 0, false, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	}
	model, toks, err = l.parse(b, req.Header)
	return model, toks, true, err
}

// inspectBody reads req.Body, which cannot be read again, and returns a
// copy of req whose body replays the bytes read followed by the rest.
func (l *Limiter) inspectBody(req *http.Request) (*http.Request, string, int64, error) {
	b, isJSON, err := readJSONBody(req.Body, nil, req.ContentLength, l.cfg.MaxBufferedBody)
	if err == errNotJSON {
		if enc := contentEncoding(req.Header); !unencoded(enc) {
			return l.inspectEncodedBody(req, b, enc)
		}
		if form, boundary := formOf(req.Header); form == multipartForm || form == urlencodedForm {
			return l.inspectFormBody(req, b, form, boundary)
		}
	}
	send := *req
	switch {
	case err == errNotJSON || err == errBodyTooLarge:
		send.Body = readThenRest(b, req.Body)
		if isJSON {
			// Too long to read: a prompt this long spends a whole minute
			// of tokens, if not more.
			return &send, "", l.toks.Burst, nil
		}
		return &send, "", 0, nil
	case err == nil:
		// Sent as read, under the length read, it would not be the body
		// net/http refuses (see replayable).
		err = checkLength(req.ContentLength, int64(len(b)))
	}
	req.Body.Close()
	if err != nil {
		return req, "", 0, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	}
	setBody(&send, b)
	if !isJSON {
		return &send, "", 0, nil
	}
	model, toks, err := l.parse(b, req.Header)
	return &send, model, toks, err
}

// inspectFormBody is inspectBody for a form (an upload to
// /audio/transcriptions) of the kind form, b the bytes of it read: see
// inspectForm. The body sent is the one the caller wrote, whole.
func (l *Limiter) inspectFormBody(req *http.Request, b []byte, form formKind, boundary string) (*http.Request, string, int64, error) {
	b, model, whole, err := l.inspectForm(b, req.Body, req.ContentLength, form, boundary)
	send := *req
	switch {
	case err != nil:
		req.Body.Close()
		return req, "", 0, err
	case whole:
		req.Body.Close()
		setBody(&send, b)
	default:
		send.Body = readThenRest(b, req.Body)
	}
	return &send, model, 0, nil
}

// inspectForm reads the rest of a form of the kind form, b its first
// bytes, from r, up to MaxBufferedBody bytes in all, for the model its
// model field names, as a JSON body's is read (see formModel): a form
// that servers may read differently names none, as does a longer one.
// A form counts no tokens. It returns the bytes read, and whole when r
// was read to its end.
func (l *Limiter) inspectForm(b []byte, r io.Reader, contentLength int64, form formKind, boundary string) ([]byte, string, bool, error) {
	b, err := appendAtMost(r, b, l.cfg.MaxBufferedBody)
	switch {
	case err == errBodyTooLarge:
		return b, "", false, nil
	case err == nil:
		err = checkLength(contentLength, int64(len(b))) // see inspectGetBody
	}
	if err != nil {
		return b, "", false, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	}
	spans, model, err := formModel(b, form, boundary)
	if err != nil || len(spans) == 0 {
		return b, "", true, nil
	}
	return b, model, true, nil
}

// inspectEncodedBody is inspectBody for a body sent with the Content-Encoding
// enc, other than identity, that is no JSON as written, b the bytes of it
// read. The body sent is the one the caller wrote, whole: what was read
// of it, then the rest.
func (l *Limiter) inspectEncodedBody(req *http.Request, b []byte, enc string) (*http.Request, string, int64, error) {
	read := bytes.NewBuffer(b[:len(b):len(b)]) // b, then what src reads after it
	src := &sourceReader{r: io.MultiReader(bytes.NewReader(b), io.TeeReader(req.Body, read))}
	model, toks, whole, err := l.inspectEncoded(src, enc, req.ContentLength)
	send := *req
	switch {
	case err != nil:
		req.Body.Close()
		return req, "", 0, err
	case whole:
		req.Body.Close()
		setBody(&send, read.Bytes())
	default:
		send.Body = readThenRest(read.Bytes(), req.Body)
	}
	return &send, model, toks, nil
}

// inspectEncoded reads the body src reads, sent with the Content-Encoding
// enc, other than identity, and declared contentLength bytes long, that
// is no JSON as written, for its model and token estimate. A gzip body is
// read decompressed and counted as the same body uncompressed, up to
// MaxBufferedBody bytes, compressed and decompressed, so that a gzip bomb
// costs no more than a long body. Any other is counted as a JSON body too
// long to read is (see inspectBody), and keyed without a model: one
// compressed otherwise (br, zstd, deflate, gzip twice), or past
// MaxBufferedBody, or not the gzip it says. A server that decompresses it
// may run a prompt of any length. whole reports whether src was read to
// its end; only the errors of src's own reader are returned, and those of
// the parse.
func (l *Limiter) inspectEncoded(src *sourceReader, enc string, contentLength int64) (model string, toks int64, whole bool, err error) {
	if !gzipped(enc) {
		return "", l.toks.Burst, false, nil
	}
	var plain []byte
	isJSON := false
	zr, err := gzip.NewReader(&boundedReader{r: src, n: l.cfg.MaxBufferedBody})
	if err == nil {
		buf := getBodyBuffer()
		plain, isJSON, err = readJSONBody(zr, (*buf)[:0], -1, l.cfg.MaxBufferedBody)
		defer func() { putBodyBuffer(buf, plain) }()
	}
	switch {
	case src.err != nil:
		return "", 0, false, fmt.Errorf("httpguard: limiter: reading the request body: %w", src.err)
	case err == errNotJSON:
		return "", 0, false, nil // an upload, say: no tokens, as uncompressed
	case err != nil:
		return "", l.toks.Burst, false, nil
	}
	if err := checkLength(contentLength, src.n); err != nil {
		return "", 0, false, fmt.Errorf("httpguard: limiter: reading the request body: %w", err) // see inspectGetBody
	}
	if !isJSON {
		return "", 0, true, nil
	}
	model, toks, err = l.parse(plain, nil)
	return model, toks, true, err
}

// parse reads a JSON body for its model and token estimate; a body that is
// not a chat request counts as a request only. A body that servers would
// read differently is refused, as the Budget refuses it: no reading of it
// is sure to name the model that runs it, nor to count no fewer tokens
// than the provider takes. h is the header the body was sent with, nil for
// a body read decompressed: a body that is no chat request as written but
// is labelled compressed is counted as one that cannot be decompressed
// (see inspectEncoded).
func (l *Limiter) parse(body []byte, h http.Header) (model string, toks int64, err error) {
	cr, err := parseChatRequest(body)
	switch {
	case errors.Is(err, errAmbiguousRequest):
		return "", 0, fmt.Errorf("httpguard: limiter: servers would read this body differently, so neither the model that runs it nor its tokens can be told (spell the field as the API documents): %w", err)
	case err != nil && h != nil && !unencoded(contentEncoding(h)):
		return "", l.toks.Burst, nil
	case err != nil:
		return "", 0, nil
	}
	return cr.Model, l.tokens(&cr), nil
}

// errNotJSON reports a body readJSONBody stopped reading: it is not JSON.
var errNotJSON = errors.New("httpguard: the body is not JSON")

// readJSONBody reads r into buf until it can tell whether the body is a
// JSON object, its first byte that is not space being '{'. A body that is
// not is left there, after at most sniffLen bytes (or the spaces before its
// first byte), with errNotJSON. A JSON body is read to its end, into a
// buffer grown at once to its declared length (when known and within
// limit), failing with errBodyTooLarge once more than limit bytes arrive.
// b holds what was read; isJSON is true once the '{' was seen.
func readJSONBody(r io.Reader, buf []byte, contentLength, limit int64) (b []byte, isJSON bool, err error) {
	b = buf[:0]
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, sniffLen)
		}
		room := b[len(b):cap(b)]
		if !isJSON && len(room) > sniffLen {
			room = room[:sniffLen]
		}
		if left := limit - int64(len(b)); int64(len(room)) > left {
			room = room[:left+1]
		}
		n, rerr := r.Read(room)
		if !isJSON {
			if i := firstNonSpace(room[:n]); i >= 0 {
				if room[i] != '{' {
					return b[:len(b)+n], false, errNotJSON
				}
				isJSON = true
				if contentLength > int64(cap(b)) && contentLength <= limit {
					b = append(sizedBuffer(contentLength, limit), b[:len(b)+n]...)[:len(b)]
				}
			}
		}
		b = b[:len(b)+n]
		switch {
		case int64(len(b)) > limit:
			return b, isJSON, errBodyTooLarge
		case rerr == io.EOF:
			return b, isJSON, nil
		case rerr != nil:
			return b, isJSON, rerr
		}
	}
}

// firstNonSpace returns the index of the first byte of p that is not JSON
// space, or -1.
func firstNonSpace(p []byte) int {
	for i, c := range p {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
	}
	return -1
}

// tokens is the model tokens a request takes from the bucket before its
// usage is known.
func (l *Limiter) tokens(cr *chatRequest) int64 {
	if l.toks.Burst == 0 {
		return 0
	}
	out := cr.MaxOutput
	if out <= 0 {
		out = l.cfg.OutputEstimate
	}
	// The central prompt estimate, not the budget's upper bound: the usage
	// corrects it either way, and pacing by a bound would run below the
	// provider's limit.
	return min(cr.EstimatedPromptTokens+out*cr.Choices, l.toks.Burst)
}

// acquire waits for key's turn to send an attempt needing toks model tokens,
// which takeFast could not take at once, and returns when the turn came,
// with the own store's end of it (see MemoryLimitStore.takeAt). now is
// the time the attempt arrived.
func (l *Limiter) acquire(ctx context.Context, ks *keyState, toks int64, now time.Time) (time.Time, int64, error) {
	start := now
	var p place
	throttled := false
	for {
		allowed := l.allowedWait(ctx, now.Sub(start))
		wait, reason, err := l.turn(ctx, ks, &p, toks, now, allowed)
		if err != nil {
			l.storeErrors.Add(1)
			return now, noEnd, fmt.Errorf("httpguard: limiter: key %q: the limit store failed: %w", ks.name, err)
		}
		if wait == 0 {
			return now, p.end, nil
		}
		if wait > allowed {
			ks.leave(&p)
			l.dropAhead(ctx, ks, &p, toks)
			l.rejected.Add(1)
			l.event(ThrottleEvent{Key: ks.name, Reason: reason, Wait: wait, Rejected: true})
			return now, noEnd, &LimitError{Key: ks.name, Reason: reason, Tokens: toks, Wait: wait, Allowed: allowed, server: l.setByServer(ks, reason)}
		}
		if reason != "" { // "": in line for another request's answer, not throttled (see turn)
			if !throttled {
				throttled = true
				l.throttled.Add(1)
			}
			l.event(ThrottleEvent{Key: ks.name, Reason: reason, Wait: wait})
		}
		slept := now
		resume := holdAttemptTimer(ctx) // a Retrier's AttemptTimeout does not count the queue
		woken, err := l.sleep(ctx, wait, p.wake)
		resume()
		if woken {
			// A pause or a lowered rate moved the place, in the queue's
			// order: the request sleeps again to it, or is refused now if
			// it is beyond what it may wait.
			now = l.now()
			l.waited.Add(int64(min(max(now.Sub(slept), 0), wait)))
			continue
		}
		l.waited.Add(int64(wait))
		if err != nil {
			ks.leave(&p)
			l.dropAhead(ctx, ks, &p, toks)
			l.canceled.Add(1)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) { // not err, which holds a caller's cause too
				return now, noEnd, fmt.Errorf("httpguard: limiter: key %q: %w: %w while waiting for a turn", ks.name, ErrRateLimited, err)
			}
			return now, noEnd, fmt.Errorf("httpguard: limiter: key %q: %w while waiting for a turn", ks.name, err)
		}
		now = l.now()
	}
}

// sleepQueued sleeps for d, a request's wait at its place in the queue,
// or until wake is closed (a pause or a lowered rate moved the place; a
// nil wake never is): woken says so, ctx not having ended. It selects on
// wake itself, so that a request is awake from the moment the Limiter
// closes it, with no goroutine (context.AfterFunc) in between, and
// nothing allocated but the timer.
func sleepQueued(ctx context.Context, d time.Duration, wake <-chan struct{}) (woken bool, err error) {
	if d <= 0 {
		return false, contextEnd(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-wake:
		if err := contextEnd(ctx); err != nil {
			return false, err
		}
		return true, nil
	case <-ctx.Done():
		return false, contextEnd(ctx)
	}
}

// allowedWait is how long a request that has waited for waited may still
// wait: MaxWait and its context's deadline bound it.
func (l *Limiter) allowedWait(ctx context.Context, waited time.Duration) time.Duration {
	allowed := max(l.cfg.MaxWait-waited, 0)
	if deadline, ok := ctx.Deadline(); ok {
		allowed = min(allowed, max(time.Until(deadline), 0))
	}
	return allowed
}

// setByServer reports whether a turn too far away for the reason by was
// set by what the server said: a pause it asked for, or the requests
// bucket at a rate its 429s lowered.
func (l *Limiter) setByServer(ks *keyState, by ThrottleReason) bool {
	switch by {
	case ThrottlePaused:
		return true
	case ThrottleRequests:
		ks.lock()
		defer ks.unlock()
		return ks.adapting
	}
	return false
}

// A LimitError is the error of a request a Limiter refused because its
// turn was further away than the request could wait: it wraps
// ErrRateLimited, and errors.As finds it through a *RetryError and a
// *url.Error. Its fields say what refused, for a caller that answers in
// the Limiter's name (a gateway's 429 and Retry-After). Its message reads
//
//	httpguard: limiter: key "api.holysheep.ai deepseek-v3.2": rate limited by the requests bucket: the turn is 1.2s away, more than the 100ms allowed
//
// A LimitError is not modified after it is returned, and is safe to read
// from several goroutines.
type LimitError struct {
	// Key is the refusing bucket's key (by default host and model).
	Key string
	// Reason says what refused: ThrottleRequests (the requests bucket),
	// ThrottleTokens (the tokens bucket) or ThrottlePaused (a pause the
	// server asked for).
	Reason ThrottleReason
	// Tokens is what the request was estimated to take of the tokens
	// bucket: its prompt and its output's bound, for each choice.
	Tokens int64
	// Wait is how far away the request's turn was; Allowed, how long it
	// could wait (MaxWait, or less by its context's deadline).
	Wait, Allowed time.Duration

	// server is true when what the server said set the turn (see
	// limitedByServer).
	server bool
}

// Error says which bucket refused the request, under which key, how far
// its turn was and how long it could wait.
func (e *LimitError) Error() string {
	what := "the requests bucket"
	switch e.Reason {
	case ThrottleTokens:
		what = fmt.Sprintf("the tokens bucket (the request is estimated at %d tokens)", e.Tokens)
	case ThrottlePaused:
		what = "a pause the server asked for"
	}
	return fmt.Sprintf("httpguard: limiter: key %q: %v by %s: the turn is %v away, more than the %v allowed",
		e.Key, ErrRateLimited, what, roundWait(e.Wait), roundWait(e.Allowed))
}

// Unwrap returns ErrRateLimited.
func (e *LimitError) Unwrap() error { return ErrRateLimited }

// RetryAfter returns Wait: how long after the refusal the turn comes, at
// the pace the Limiter knew then.
func (e *LimitError) RetryAfter() time.Duration { return e.Wait }

// limitedByServer reports whether err is a Limiter's refusal of a request
// whose turn the server set beyond what the request could wait: a pause
// it asked for (a 429's Retry-After, a window reported spent), or a rate
// its 429s lowered.
func limitedByServer(err error) bool {
	if err == nil { // errors.As would cost an allocation for nothing
		return false
	}
	var e *LimitError
	return errors.As(err, &e) && e.server
}

// roundWait rounds d for people: to the millisecond, or to the microsecond
// below one.
func roundWait(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// observe follows what the response says and corrects the token estimate
// once the usage is known. parsed is what a Budget above parsed of sent,
// if it vouches for it.
func (l *Limiter) observe(sent *http.Request, parsed *parsedRequest, ks *keyState, toks int64, resp *http.Response, sentAt time.Time, end int64) {
	if !l.cfg.IgnoreServer && (resp.StatusCode == http.StatusTooManyRequests || mayReportSpentWindow(resp.Header)) {
		l.follow(sent.Context(), ks, resp, sentAt)
	}
	if toks == 0 || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if p := parsed; p != nil && resp.StatusCode/100 == 2 {
		// The Budget above reads this answer's usage: hear it from there
		// rather than scan the answer twice.
		c := &p.correction
		if p.usageTo != nil { // another Limiter took the room
			c = new(tokenCorrection)
		}
		*c = tokenCorrection{ks: ks, estimate: toks, end: end, next: p.usageTo}
		p.usageTo = c
		return
	}
	s := &settlement{tokenCorrection: tokenCorrection{ks: ks, estimate: toks, end: end}}
	s.observe(resp, s, false)
}

// follow pauses ks when the response says its window is spent, and lowers
// its rate on a 429. observe calls it for a 429, or a response that
// mayReportSpentWindow.
//
// A 429's wait counts from now, as its headers tell when to retry. The
// reset a successful answer reports for a spent window counts from when
// the request was sent: the provider counted the request when it arrived,
// and an answer that took a while to generate reports a reset that much
// older; a request sent at the reset arrives about when the window opens.
// A reset given as a time (Anthropic's) is that time, however long the
// answer took, on the server's clock (see serverNow): it is read as a wait
// from when the request was sent.
// MaxPause caps the pause from now, as a 429's.
func (l *Limiter) follow(ctx context.Context, ks *keyState, resp *http.Response, sentAt time.Time) {
	tooMany := resp.StatusCode == http.StatusTooManyRequests
	now := l.now()
	ks = l.held(ks, now)
	if tooMany {
		// A spent quota says nothing of the rate: lowering it would only
		// refuse the calls that would have heard why.
		billing, rates := isBillingStop(ctx, resp), true
		if !billing {
			rates = l.slowDown(ctx, ks, now, sentAt)
		}
		rl := parseRateLimit(resp.Header, serverNow(resp.Header, now))
		d, coarse, ok := refusalWait(resp.Header, rl, now)
		spent := rl.spent()
		switch {
		case !ok:
		case !rates && !spent:
			// A 429 the key's share of them tolerates, which reports no
			// spent window, is a degraded provider's: its wait is its own
			// request's (the Retrier's), not every caller's. Each paused
			// the key: at 3% of 200/s answered 429 with retry-after-ms:
			// 20, the key served 144.8/s of 200/s.
		case coarse && d <= time.Second && !spent && !billing && l.adapts():
			// Retry-After: 1 that no reset refines is the least a
			// whole-second Retry-After can say, a wait rounded up: the
			// window reopens anywhere within the second. The refused
			// request waits it (the Retrier's); the rate slowDown lowered
			// spaces the others. Paused for the whole second at each
			// 429, a key whose provider sent Retry-After: 1 alone, its
			// window reopening after 20 ms, served 18.7/s of 50/s.
		default:
			l.pause(ctx, ks, now, now.Add(min(d, l.cfg.MaxPause)))
		}
		return
	}
	// The server's clock when the request was sent: a reset time counts
	// from it, as from sentAt on this clock.
	sentOnServer := serverNow(resp.Header, now).Add(sentAt.Sub(now))
	if d, ok := parseRateLimit(resp.Header, sentOnServer).exhaustedWait(); ok {
		l.pause(ctx, ks, now, minTime(sentAt.Add(d), now.Add(l.cfg.MaxPause)))
	}
}

// adapts reports whether a 429 can lower l's request rate: there is one,
// and Adaptive.MinRequestsPerSecond is below it.
func (l *Limiter) adapts() bool {
	return l.cfg.RequestsPerSecond > 0 && l.cfg.Adaptive.MinRequestsPerSecond < l.cfg.RequestsPerSecond
}

// remainingHeaders are the headers in which parseRateLimit can find a
// window spent (remaining 0).
var remainingHeaders = [...]string{
	"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Remaining-Tokens",
	"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Tokens-Remaining",
	"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Remaining",
	"X-Ratelimit-Remaining",
}

// shortestRemaining is the length of the shortest of remainingHeaders: a
// shorter name, as most are, is none of them.
const shortestRemaining = len("X-Ratelimit-Remaining")

// mayReportSpentWindow is a cheap test that spares parsing the headers of
// a response that reports no spent window. A map of a few headers is
// quicker ranged over; a response's usual dozen or two, quicker asked for
// the six names. The range stops at the last key rather than asking the
// map for one more: that step costs as much as reading a key.
func mayReportSpentWindow(h http.Header) bool {
	if left := len(h); left <= 4 {
		for k := range h {
			if len(k) >= shortestRemaining && slices.Contains(remainingHeaders[:], k) {
				return true
			}
			if left--; left == 0 {
				break
			}
		}
		return false
	}
	for _, k := range remainingHeaders {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// ownStore reports whether l's store is its own, the config having named
// none (a test may replace it).
func (l *Limiter) ownStore() bool { return l.own != nil && l.cfg.Store == LimitStore(l.own) }

func (l *Limiter) event(e ThrottleEvent) {
	if l.cfg.OnThrottle != nil {
		l.cfg.OnThrottle(e)
	}
}

// settlement scans an answer for its usage and corrects the token
// estimate. Embedding the usageReader makes it one allocation.
type settlement struct {
	usageReader
	tokenCorrection
}

// tokenCorrection corrects one request's token estimate once its answer's
// usage is known.
type tokenCorrection struct {
	ks       *keyState // and its Limiter, ks.l
	estimate int64
	// end is the end of the turn, as the Limiter's own store tells it
	// (see MemoryLimitStore.takeAt) or a TurnLimitStore of the config's:
	// a credit gives back only what the bucket still owes of the tokens
	// (see MemoryLimitStore.adjust). noEnd: the store told none.
	end int64
	// next is a Limiter below this one (a tenant's Limiter above a whole
	// gateway's) that also waits for the Budget's usage.
	next usageReporter
}

func (s *tokenCorrection) reportUsage(u *Usage, ok bool) {
	if used := u.InputTokens + u.OutputTokens; ok && used >= 0 && used != s.estimate {
		if l := s.ks.l; l.ownStore() {
			l.own.adjust(s.ks.name, &s.ks.stored, &l.toks, used-s.estimate, s.end, s.asOf(used-s.estimate))
		} else {
			s.adjustShared(used - s.estimate)
		}
	}
	if s.next != nil {
		s.next.reportUsage(u, ok)
	}
}

// asOf returns the time, as the Limiter's own store reads it, as of which
// a correction of n tokens is made (see MemoryLimitStore.adjust). A credit
// is made as of the last turn taken on the key, or debt added to it,
// whichever came later: no clock is read. A debit is made now, which it
// records as the key's last debt, first, so that a credit from then on
// counts from it.
func (s *tokenCorrection) asOf(n int64) int64 {
	ks := s.ks
	if n < 0 {
		// The key's birth on the store's clock, plus the nanoseconds since
		// it: what elapsed(ks.at(…)) reads, with one time.Time subtraction
		// rather than an addition and a subtraction (~0.07k instructions).
		return ks.l.own.elapsed(ks.born) + max(ks.lastSent.Load(), ks.lastDebit.Load())
	}
	now := ks.l.now()
	if since := ks.since(now); since > ks.lastDebit.Load() {
		ks.lastDebit.Store(since)
	}
	return ks.l.own.elapsed(now)
}

// adjustShared takes n more tokens from the key's bucket in a store the
// config names, or gives -n back: on a TurnLimitStore, only what the
// bucket still owes of the turn's tokens.
func (s *tokenCorrection) adjustShared(n int64) {
	l := s.ks.l
	// The request is over: its context may be done, and the correction is
	// still due. The store bounds its own time.
	ctx := context.Background()
	var err error
	if n < 0 && l.turns != nil {
		err = l.turns.CreditTurn(ctx, s.ks.name, l.toks.BucketLimit, s.end, -n)
	} else {
		err = l.cfg.Store.Adjust(ctx, s.ks.name, l.toks.BucketLimit, n)
	}
	if err != nil {
		l.storeErrors.Add(1)
	}
}
