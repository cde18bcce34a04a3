package httpguard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// This file is the Limiter: client-side token buckets for requests and model
// tokens, kept per key (host and model by default), that also follow what
// the server says (429s, Retry-After, x-ratelimit-* headers).
//
// Where the per-key state lives is behind limitStore, so that a fleet-wide
// store (Redis, in the redisguard nested module) can replace the in-process
// buckets without touching the request path below.

// ErrRateLimited is returned, wrapped, when a request cannot get its turn
// within LimitConfig.MaxWait or before its context's deadline. The Limiter
// fails at once when it can tell the wait is too long; it never sleeps only
// to fail. The request was not sent.
//
// The error names the key and the wait, as in
//
//	httpguard: limiter: key "api.holysheep.ai deepseek-v3.2": rate limited: the turn is 1s away, more than the 100ms allowed
//
// and reaches the caller through a *RetryError when a Retrier is outside,
// and a *url.Error from http.Client: test for it with errors.Is.
var ErrRateLimited = errors.New("rate limited")

// Defaults for the zero fields of LimitConfig.
const (
	// DefaultIdleTTL is how long a key's state is kept after its last use.
	DefaultIdleTTL = 10 * time.Minute
	// DefaultMaxOutput is the number of output tokens a request that sets no
	// max_tokens is assumed to produce, until its real usage is known.
	DefaultMaxOutput = 1024
	// DefaultDecreaseFactor is β: a repeated 429 multiplies the request rate
	// by it (AWS SDK adaptive retry mode and CUBIC use 0.7).
	DefaultDecreaseFactor = 0.7
	// DefaultRecoveryScale is C, in requests/s per s³: after a decrease the
	// rate grows back as C·(t−K)³ + Wmax (CUBIC, AWS SDK's adaptive mode).
	DefaultRecoveryScale = 0.4
	// DefaultMinRequestsPerSecond is the floor decreases stop at (AWS SDK's
	// adaptive mode uses 0.5 requests/s).
	DefaultMinRequestsPerSecond = 0.5
)

// decreaseHold is how long after a decrease 429s do not lower the rate
// again: the shortest window providers count requests over is a second, and
// until it has passed the server still sees traffic sent at the old rate.
const decreaseHold = time.Second

// repeatWindow is how close two 429s must be for the second to lower the
// rate: a minute, the window providers' per-minute limits are counted over.
const repeatWindow = time.Minute

// smallestPrompt is the prompt allowance, in tokens, a token limit must leave
// room for next to DefaultMaxOutput: a TokensPerMinute below
// DefaultMaxOutput+smallestPrompt could not admit an ordinary request.
const smallestPrompt = 100

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
	// with a burst of TokensPerMinute. 0 means no token limit.
	TokensPerMinute int
	// MaxWait is the longest a request waits for its turn; a request that
	// would wait longer fails at once with ErrRateLimited. 0 means wait as
	// long as the request's context allows.
	MaxWait time.Duration
	// Key names the bucket a request belongs to, given the request and the
	// model its body names ("" when the body names none). nil means the
	// request URL's host and the model: each model of each provider has its
	// own limits, as providers count them. The key appears in errors and
	// ThrottleEvents: keep secrets (API keys) out of it, or hash them. It is
	// called from the goroutines of concurrent requests, so it must be safe
	// for concurrent use.
	Key func(req *http.Request, model string) string
	// IdleTTL is how long an unused key's state is kept. Idle keys are
	// dropped lazily, as requests come, so thousands of model names do not
	// grow memory without bound. 0 means DefaultIdleTTL.
	IdleTTL time.Duration
	// DefaultMaxOutput is the output tokens counted for a request whose body
	// sets no max_tokens, until its real usage is known. 0 means
	// DefaultMaxOutput.
	DefaultMaxOutput int
	// MaxBufferedBody bounds how many bytes of a request body the Limiter
	// reads to estimate tokens. 0 means DefaultMaxBufferedBody.
	MaxBufferedBody int64
	// IgnoreServer turns off following the server: by default (false) a 429 or a
	// response reporting a spent window (Retry-After, x-ratelimit-*,
	// anthropic-ratelimit-*) pauses the whole key until the reset, and
	// repeated 429s (two within a minute) lower the key's request rate,
	// which then recovers to RequestsPerSecond. Without a RequestsPerSecond
	// there is no rate to lower: only the pauses apply.
	IgnoreServer bool
	// OnThrottle, when set, is called for every wait, rejection, server
	// pause and rate decrease, from the goroutine of the request concerned.
	// It must be quick and safe for concurrent use.
	OnThrottle func(ThrottleEvent)
	// DecreaseFactor is β, what a repeated 429 multiplies the key's request
	// rate by (at most once a second), in (0, 1). 0 means
	// DefaultDecreaseFactor.
	DecreaseFactor float64
	// RecoveryScale is C, how fast the rate grows back after a decrease, in
	// requests/s per s³. 0 means DefaultRecoveryScale.
	RecoveryScale float64
	// MinRequestsPerSecond is the rate decreases stop at (never above
	// RequestsPerSecond). 0 means DefaultMinRequestsPerSecond.
	MinRequestsPerSecond float64
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
	// ThrottleSlowDown: a repeated 429 lowered the key's request rate to
	// Rate.
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
	// Requests counts attempts that reached the Limiter.
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
	// Waited is the total of the waits attempts were given; a wait cut short
	// by its context counts in full.
	Waited time.Duration
	// Keys is the number of keys whose state is kept now.
	Keys int
}

// A Limiter is a Layer that paces requests per key with two token buckets,
// one for requests and one for model tokens, and follows the server's rate
// limit signals. Make one with NewLimiter; the zero Limiter is not usable. A
// Limiter is safe for concurrent use, and one Limiter may wrap several
// transports, which then share its buckets.
//
// Place it inside the Retrier (Budget → Retrier → Limiter → base): there
// every attempt, retries included, takes its turn, so retries are paced like
// first tries and cannot burst past the provider's limit. What changes
// outside: a Retrier wrapping it sees ErrRateLimited, not a 429, when the
// wait is too long, and does not retry it (with DefaultClassifier); the
// time an attempt waits here counts against the caller's context, but not
// against the Retrier's AttemptTimeout, which is held while the attempt
// waits for its turn.
//
// Following the server (unless IgnoreServer): a 429 with Retry-After, or
// any response whose x-ratelimit-* or anthropic-ratelimit-* headers report a
// spent window, pauses the whole key until the reset, for every goroutine.
// Repeated 429s lower the key's request rate by DecreaseFactor, which then
// grows back along CUBIC's curve to RequestsPerSecond, never above.
//
// For each attempt the Limiter reads the JSON body (without losing it: the
// server gets it byte for byte) to learn the model and estimate the tokens:
// the prompt plus max_tokens (or DefaultMaxOutput) for each of its n
// completions. It then waits until the key is not paused and one request
// token and that many model tokens are available, and sends. When the
// caller has read the answer's usage, the difference between estimate and
// usage is given back to, or taken from, the key; an answer without usage
// (an error, a stream cut short or without include_usage) keeps the
// estimate. Non-JSON bodies (by Content-Type) are not read and take no
// model tokens.
type Limiter struct {
	cfg      LimitConfig
	keyFunc  func(*http.Request, string) string
	maxBody  int64
	maxOut   int64
	tokBurst int64
	store    limitStore

	// now and sleep are the clock; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	requests, throttled, rejected, canceled atomic.Uint64
	serverPauses, slowDowns                 atomic.Uint64
	waited                                  atomic.Int64
}

// NewLimiter returns a Limiter configured by c, or an error (prefixed
// "httpguard: limiter:") saying which field of c is invalid.
func NewLimiter(c LimitConfig) (*Limiter, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.IdleTTL == 0 {
		c.IdleTTL = DefaultIdleTTL
	}
	if c.DefaultMaxOutput == 0 {
		c.DefaultMaxOutput = DefaultMaxOutput
	}
	if c.MaxBufferedBody == 0 {
		c.MaxBufferedBody = DefaultMaxBufferedBody
	}
	if c.DecreaseFactor == 0 {
		c.DecreaseFactor = DefaultDecreaseFactor
	}
	if c.RecoveryScale == 0 {
		c.RecoveryScale = DefaultRecoveryScale
	}
	if c.MinRequestsPerSecond == 0 {
		c.MinRequestsPerSecond = DefaultMinRequestsPerSecond
	}
	c.MinRequestsPerSecond = min(c.MinRequestsPerSecond, c.RequestsPerSecond)
	if err := c.validateTokens(); err != nil {
		return nil, err
	}
	l := &Limiter{
		cfg:      c,
		keyFunc:  c.Key,
		maxBody:  c.MaxBufferedBody,
		maxOut:   int64(c.DefaultMaxOutput),
		tokBurst: int64(c.TokensPerMinute),
		now:      time.Now,
		sleep:    sleepCtx,
	}
	if l.keyFunc == nil {
		l.keyFunc = hostModelKey
	}
	l.store = newMemStore(&l.cfg)
	return l, nil
}

func (c *LimitConfig) validate() error {
	bad := func(name string, v any, want string) error {
		return fmt.Errorf("httpguard: limiter: %s must be %s, got %v", name, want, v)
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	switch {
	case !finite(c.RequestsPerSecond) || c.RequestsPerSecond < 0:
		return bad("RequestsPerSecond", c.RequestsPerSecond, "a finite number >= 0")
	case c.Burst < 0:
		return bad("Burst", c.Burst, ">= 0")
	case c.RequestsPerSecond > 0 && c.Burst < 1:
		return bad("Burst", c.Burst, ">= 1 when RequestsPerSecond is set")
	case c.TokensPerMinute < 0:
		return bad("TokensPerMinute", c.TokensPerMinute, ">= 0")
	case c.MaxWait < 0:
		return bad("MaxWait", c.MaxWait, ">= 0")
	case c.IdleTTL < 0:
		return bad("IdleTTL", c.IdleTTL, ">= 0")
	case c.DefaultMaxOutput < 0:
		return bad("DefaultMaxOutput", c.DefaultMaxOutput, ">= 0")
	case c.MaxBufferedBody < 0:
		return bad("MaxBufferedBody", c.MaxBufferedBody, ">= 0")
	case !finite(c.DecreaseFactor) || c.DecreaseFactor < 0 || c.DecreaseFactor >= 1:
		return bad("DecreaseFactor", c.DecreaseFactor, "in (0, 1)")
	case !finite(c.RecoveryScale) || c.RecoveryScale < 0:
		return bad("RecoveryScale", c.RecoveryScale, "a finite number >= 0")
	case !finite(c.MinRequestsPerSecond) || c.MinRequestsPerSecond < 0:
		return bad("MinRequestsPerSecond", c.MinRequestsPerSecond, "a finite number >= 0")
	}
	return nil
}

// validateTokens runs after defaults are set.
func (c *LimitConfig) validateTokens() error {
	if c.TokensPerMinute > 0 && c.DefaultMaxOutput > c.TokensPerMinute-smallestPrompt {
		return fmt.Errorf("httpguard: limiter: TokensPerMinute %d is too small for a request with DefaultMaxOutput %d output tokens and a short prompt: it must be at least %d",
			c.TokensPerMinute, c.DefaultMaxOutput, c.DefaultMaxOutput+smallestPrompt)
	}
	return nil
}

// hostModelKey is the default LimitConfig.Key.
func hostModelKey(req *http.Request, model string) string {
	if req.URL == nil {
		return model
	}
	return req.URL.Host + " " + model
}

// Wrap returns a RoundTripper that paces requests through l before passing
// them to next (http.DefaultTransport when nil). It forwards
// CloseIdleConnections to next.
func (l *Limiter) Wrap(next http.RoundTripper) http.RoundTripper {
	if l == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	return &limitTransport{l: l, next: orDefault(next)}
}

// Stats returns l's counters. It is safe to call concurrently with requests.
func (l *Limiter) Stats() LimiterStats {
	return LimiterStats{
		Requests:     l.requests.Load(),
		Throttled:    l.throttled.Load(),
		Rejected:     l.rejected.Load(),
		Canceled:     l.canceled.Load(),
		ServerPauses: l.serverPauses.Load(),
		SlowDowns:    l.slowDowns.Load(),
		Waited:       time.Duration(l.waited.Load()),
		Keys:         l.store.len(),
	}
}

type limitTransport struct {
	l    *Limiter
	next http.RoundTripper
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport below.
func (t *limitTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	l := t.l
	l.requests.Add(1)
	send, model, toks, err := l.inspect(req)
	if err != nil {
		closeRequestBody(req)
		return nil, Refuse(err)
	}
	key := l.keyFunc(req, model)
	tk, sentAt, err := l.acquire(req.Context(), key, toks)
	if err != nil {
		closeRequestBody(send)
		return nil, Refuse(err)
	}
	resp, err := t.next.RoundTrip(send)
	if err != nil {
		return nil, err
	}
	l.observe(key, tk, resp, sentAt)
	return resp, nil
}

// inspect reads a JSON request body for its model and token estimate. It
// returns the request to send, whose body replays the bytes read.
func (l *Limiter) inspect(req *http.Request) (send *http.Request, model string, toks int64, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, "", 0, nil
	}
	if cr, ok := parsedChat(req); ok { // a Budget outside read it already
		return req, cr.Model, l.tokens(cr), nil
	}
	if !strings.Contains(req.Header.Get("Content-Type"), "json") {
		return req, "", 0, nil
	}
	send, body, err := replayable(req, l.maxBody)
	if err == errBodyTooLarge {
		// Too long to read: a prompt this long spends a whole minute of
		// tokens, if not more.
		return send, "", l.tokBurst, nil
	}
	if err != nil {
		return req, "", 0, fmt.Errorf("httpguard: limiter: reading the request body: %w", err)
	}
	cr, err := parseChatRequest(body)
	if err != nil {
		return send, "", 0, nil // not a chat request: counts as a request only
	}
	return send, cr.Model, l.tokens(&cr), nil
}

// tokens is the model tokens a request takes from the bucket before its
// usage is known.
func (l *Limiter) tokens(cr *chatRequest) int64 {
	if l.tokBurst == 0 {
		return 0
	}
	out := cr.MaxOutput
	if out <= 0 {
		out = l.maxOut
	}
	// The central prompt estimate, not the budget's upper bound: the usage
	// corrects it either way, and pacing by a bound would run below the
	// provider's limit.
	return min(cr.EstimatedPromptTokens+out*cr.Choices, l.tokBurst)
}

// acquire waits for key's turn to send an attempt needing toks model tokens
// and returns what it took and when the turn came. The clock is read once
// when there is no wait: time.Now is a visible part of the overhead.
func (l *Limiter) acquire(ctx context.Context, key string, toks int64) (ticket, time.Time, error) {
	start := l.now()
	now := start
	deadline, hasDeadline := ctx.Deadline()
	throttled := false
	for {
		budget := time.Duration(-1) // no bound
		if l.cfg.MaxWait > 0 {
			budget = max(l.cfg.MaxWait-now.Sub(start), 0)
		}
		if hasDeadline {
			if left := max(time.Until(deadline), 0); budget < 0 || left < budget {
				budget = left
			}
		}
		tk, wait, reason, ok := l.store.reserve(key, now, toks, budget)
		if !ok {
			l.rejected.Add(1)
			l.event(ThrottleEvent{Key: key, Reason: reason, Wait: wait, Rejected: true})
			return ticket{}, now, fmt.Errorf("httpguard: limiter: key %q: %w: the turn is %v away, more than the %v allowed", key, ErrRateLimited, wait, budget)
		}
		if wait > 0 {
			if !throttled {
				throttled = true
				l.throttled.Add(1)
			}
			l.event(ThrottleEvent{Key: key, Reason: reason, Wait: wait})
			resume := holdAttemptTimer(ctx) // a Retrier's AttemptTimeout does not count the queue
			err := l.sleep(ctx, wait)
			resume()
			l.waited.Add(int64(wait))
			if err != nil {
				l.store.cancel(tk, l.now())
				l.canceled.Add(1)
				if errors.Is(err, context.DeadlineExceeded) {
					return ticket{}, now, fmt.Errorf("httpguard: limiter: key %q: %w: %w while waiting for a turn", key, ErrRateLimited, err)
				}
				return ticket{}, now, fmt.Errorf("httpguard: limiter: key %q: %w while waiting for a turn", key, err)
			}
			now = l.now()
		}
		if tk.taken {
			return tk, now, nil
		}
		// The key was paused: nothing was taken; try again now the pause is over.
	}
}

// observe follows what the response says and corrects the token estimate
// once the usage is known.
func (l *Limiter) observe(key string, tk ticket, resp *http.Response, sentAt time.Time) {
	if !l.cfg.IgnoreServer && (resp.StatusCode == http.StatusTooManyRequests || hasRateLimitHeaders(resp.Header)) {
		now := l.now()
		var pause time.Duration
		if resp.StatusCode == http.StatusTooManyRequests {
			if d, ok := retryAfter(resp.Header, now); ok {
				pause = d
			} else if d, ok := parseRateLimit(resp.Header, now).exhaustedWait(); ok {
				pause = d
			}
			if r, ok := l.store.slowDown(key, now, sentAt); ok {
				l.slowDowns.Add(1)
				l.event(ThrottleEvent{Key: key, Reason: ThrottleSlowDown, Rate: r})
			}
		} else if d, ok := parseRateLimit(resp.Header, now).exhaustedWait(); ok {
			pause = d
		}
		if pause > 0 && l.store.pause(key, now, now.Add(pause)) {
			l.serverPauses.Add(1)
			l.event(ThrottleEvent{Key: key, Reason: ThrottleServerPause, Wait: pause})
		}
	}
	if tk.toks > 0 && resp.Body != nil && resp.Body != http.NoBody {
		observeUsage(resp, func(u Usage, ok bool) {
			if ok {
				l.store.settle(tk, l.now(), u.InputTokens+u.OutputTokens)
			}
		})
	}
}

// hasRateLimitHeaders is a cheap test that spares parsing the headers of
// responses that carry none.
func hasRateLimitHeaders(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, "X-Ratelimit-") || strings.HasPrefix(k, "Anthropic-Ratelimit-") {
			return true
		}
	}
	return false
}

func (l *Limiter) event(e ThrottleEvent) {
	if l.cfg.OnThrottle != nil {
		l.cfg.OnThrottle(e)
	}
}

// limitStore is the seam between the request path (above) and where the
// per-key state lives. memStore keeps it in this process; a fleet-wide
// store (for example GCRA on Redis, as github.com/go-redis/redis_rate does)
// implements the same five operations so that every process shares one
// budget per key:
//
//   - reserve takes one request and toks model tokens from key's buckets at
//     now, unless the key is paused (then it takes nothing and returns the
//     pause's wait) or the wait would exceed budget (negative: unbounded;
//     then it takes nothing and returns ok false with the wait needed);
//   - cancel gives back what a ticket took (its context ended while waiting);
//   - settle corrects a ticket's token estimate by the real usage: refund
//     the overestimate or take the underestimate;
//   - pause stops the key until a time (a server said its window is spent),
//     returning whether that moved the key's pause later;
//   - slowDown lowers the key's request rate after a 429 to a request sent
//     at sentAt, returning the new rate.
//
// It is not exported yet: the Redis store will decide its final shape.
type limitStore interface {
	reserve(key string, now time.Time, toks int64, budget time.Duration) (t ticket, wait time.Duration, reason ThrottleReason, ok bool)
	cancel(t ticket, now time.Time)
	settle(t ticket, now time.Time, used int64)
	pause(key string, now, until time.Time) bool
	slowDown(key string, now, sentAt time.Time) (rate float64, ok bool)
	len() int
}

// ticket is what reserve took for one attempt.
type ticket struct {
	taken bool  // false when the key was paused and nothing was taken
	toks  int64 // model tokens counted against the key (credit included)

	ks       *keyState
	req, tok *rate.Reservation
	credit   int64 // refunded tokens this ticket used instead of the bucket
}

// memStore keeps per-key state in memory. Idle keys are swept lazily, at
// most every IdleTTL/4 (and at most once a second), by the request that
// finds a sweep due: no goroutine, and O(keys) work amortised over the
// requests in between.
type memStore struct {
	cfg *LimitConfig

	mu        sync.RWMutex
	keys      map[string]*keyState
	nextSweep time.Time
}

func newMemStore(cfg *LimitConfig) *memStore {
	return &memStore{cfg: cfg, keys: make(map[string]*keyState)}
}

// keyState is one key's buckets, pause and adaptive rate. Its fields are
// guarded by mu; the rate.Limiters have their own locks as well.
type keyState struct {
	mu       sync.Mutex
	reqs     *rate.Limiter // nil: no request limit
	toks     *rate.Limiter // nil: no token limit
	credit   int64         // tokens refunded by settle, not yet used
	paused   time.Time     // no request goes before this
	last     time.Time     // latest time seen, so time never runs backwards here
	lastUsed time.Time
	evicted  bool

	// Adaptive rate: after a 429 the rate follows
	// W(t) = C·(t−K)³ + Wmax, K = ∛(Wmax·(1−β)/C), t since the decrease,
	// which starts at β·Wmax and is back at Wmax after K seconds.
	adapting     bool
	wmax         float64
	lastDecrease time.Time
	last429      time.Time
}

func (s *memStore) get(key string, now time.Time) *keyState {
	s.mu.RLock()
	ks := s.keys[key]
	due := !now.Before(s.nextSweep)
	s.mu.RUnlock()
	if ks != nil && !due {
		return ks
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.Before(s.nextSweep) {
		s.sweep(now)
		s.nextSweep = now.Add(max(s.cfg.IdleTTL/4, time.Second))
	}
	ks = s.keys[key]
	if ks == nil {
		ks = &keyState{lastUsed: now, last: now}
		if s.cfg.RequestsPerSecond > 0 {
			ks.reqs = rate.NewLimiter(rate.Limit(s.cfg.RequestsPerSecond), s.cfg.Burst)
		}
		if s.cfg.TokensPerMinute > 0 {
			ks.toks = rate.NewLimiter(rate.Limit(float64(s.cfg.TokensPerMinute)/60), s.cfg.TokensPerMinute)
		}
		s.keys[key] = ks
	}
	return ks
}

// sweep drops the keys idle for IdleTTL whose state is back to that of a new
// key (not paused, buckets full, rate recovered), so dropping loses nothing.
// s.mu is held.
func (s *memStore) sweep(now time.Time) {
	for k, ks := range s.keys {
		ks.mu.Lock()
		if now.Sub(ks.lastUsed) >= s.cfg.IdleTTL && ks.idle(now) {
			ks.evicted = true
			delete(s.keys, k)
		}
		ks.mu.Unlock()
	}
}

func (ks *keyState) idle(now time.Time) bool {
	full := func(l *rate.Limiter) bool { return l == nil || l.TokensAt(now) >= float64(l.Burst()) }
	return !now.Before(ks.paused) && !ks.adapting && full(ks.reqs) && full(ks.toks)
}

func (s *memStore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.keys)
}

// lock locks ks and returns now, moved up to the latest time ks has seen:
// rate.Limiter counts refills twice if time goes backwards.
func (ks *keyState) lock(now time.Time) time.Time {
	ks.mu.Lock()
	if now.Before(ks.last) {
		return ks.last
	}
	ks.last = now
	return now
}

func (s *memStore) reserve(key string, now time.Time, toks int64, budget time.Duration) (ticket, time.Duration, ThrottleReason, bool) {
	for {
		ks := s.get(key, now)
		now := ks.lock(now)
		if ks.evicted { // swept between get and lock
			ks.mu.Unlock()
			continue
		}
		t, wait, reason, ok := s.reserveLocked(ks, now, toks, budget)
		ks.mu.Unlock()
		return t, wait, reason, ok
	}
}

func (s *memStore) reserveLocked(ks *keyState, now time.Time, toks int64, budget time.Duration) (t ticket, wait time.Duration, reason ThrottleReason, ok bool) {
	ks.lastUsed = now
	if now.Before(ks.paused) {
		wait = ks.paused.Sub(now)
		return ticket{}, wait, ThrottlePaused, budget < 0 || wait <= budget
	}
	s.recover(ks, now)
	t = ticket{taken: true, ks: ks}
	var need int64
	if ks.toks != nil && toks > 0 {
		t.toks = toks
		// A refund is tokens put back in the bucket; the bucket never holds
		// more than its burst, so the part of the credit above that is gone.
		room := max(int64(float64(ks.toks.Burst())-ks.toks.TokensAt(now)), 0)
		ks.credit = min(ks.credit, room)
		t.credit = min(ks.credit, toks)
		ks.credit -= t.credit
		need = toks - t.credit
	}
	// Fast path, without allocating a rate.Reservation: ks.mu is held and
	// every change to ks's buckets happens under it, so enough tokens now
	// means AllowN succeeds. A turn taken at once is never cancelled.
	if need == 0 {
		if ks.reqs == nil || ks.reqs.AllowN(now, 1) {
			return t, 0, "", true
		}
	} else if (ks.reqs == nil || ks.reqs.TokensAt(now) >= 1) && ks.toks.TokensAt(now) >= float64(need) {
		if ks.reqs != nil {
			ks.reqs.AllowN(now, 1)
		}
		ks.toks.AllowN(now, int(need))
		return t, 0, "", true
	}
	if ks.reqs != nil {
		t.req = ks.reqs.ReserveN(now, 1)
		wait, reason = t.req.DelayFrom(now), ThrottleRequests
	}
	if need > 0 {
		t.tok = ks.toks.ReserveN(now, int(need))
		if d := t.tok.DelayFrom(now); d > wait {
			wait, reason = d, ThrottleTokens
		}
	}
	if budget >= 0 && wait > budget {
		s.cancelLocked(t, now)
		return ticket{}, wait, reason, false
	}
	return t, wait, reason, true
}

func (s *memStore) cancel(t ticket, now time.Time) {
	if !t.taken {
		return
	}
	now = t.ks.lock(now)
	s.cancelLocked(t, now)
	t.ks.mu.Unlock()
}

func (s *memStore) cancelLocked(t ticket, now time.Time) {
	if t.req != nil {
		t.req.CancelAt(now)
	}
	if t.tok != nil {
		t.tok.CancelAt(now)
	}
	t.ks.credit += t.credit
}

// settle corrects a ticket's estimate by the tokens really used. An
// overestimate becomes credit the next requests use before the bucket; an
// underestimate is taken at once, leaving the bucket in debt that later
// requests wait for. The debt is capped at one burst (a minute of tokens),
// so an absurd usage report cannot stall a key for long.
func (s *memStore) settle(t ticket, now time.Time, used int64) {
	ks := t.ks
	if !t.taken || ks.toks == nil || used < 0 {
		return
	}
	now = ks.lock(now)
	defer ks.mu.Unlock()
	burst := int64(ks.toks.Burst())
	switch diff := t.toks - used; {
	case diff > 0:
		ks.credit = min(ks.credit+diff, burst)
	case diff < 0:
		debt := min(-diff, burst)
		paid := min(ks.credit, debt)
		ks.credit -= paid
		if debt -= paid; debt > 0 {
			ks.toks.ReserveN(now, int(debt))
		}
	}
}

func (s *memStore) pause(key string, now, until time.Time) bool {
	ks := s.get(key, now)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.evicted || !until.After(ks.paused) {
		return false
	}
	ks.paused = until
	return true
}

// slowDown multiplies the key's rate by β on a repeated 429: one that comes
// less than repeatWindow after the key's previous 429. A lone 429 (a blip,
// or a window the pause already handles) leaves the rate alone. Nor does a
// 429 to a request sent less than decreaseHold after the last decrease
// count: that request met a server window still full of traffic sent at
// the old rate, and counting it would collapse the rate to the minimum
// whenever a burst of 429s arrives together (TCP, likewise, reacts once per
// round trip).
func (s *memStore) slowDown(key string, now, sentAt time.Time) (float64, bool) {
	ks := s.get(key, now)
	now = ks.lock(now)
	defer ks.mu.Unlock()
	repeated := !ks.last429.IsZero() && now.Sub(ks.last429) < repeatWindow
	ks.last429 = now
	if ks.reqs == nil || ks.evicted || !repeated || (!ks.lastDecrease.IsZero() && sentAt.Before(ks.lastDecrease.Add(decreaseHold))) {
		return 0, false
	}
	s.recover(ks, now)
	cur := float64(ks.reqs.Limit())
	r := max(cur*s.cfg.DecreaseFactor, s.cfg.MinRequestsPerSecond)
	ks.reqs.SetLimitAt(now, rate.Limit(r))
	ks.adapting, ks.wmax, ks.lastDecrease = true, cur, now
	return r, true
}

// recover moves an adapting key's rate along the CUBIC curve, never above
// the configured rate. ks.mu is held.
func (s *memStore) recover(ks *keyState, now time.Time) {
	if !ks.adapting {
		return
	}
	r := s.cubic(ks.wmax, now.Sub(ks.lastDecrease))
	if r >= s.cfg.RequestsPerSecond {
		r, ks.adapting = s.cfg.RequestsPerSecond, false
	}
	ks.reqs.SetLimitAt(now, rate.Limit(r))
}

// cubic is the rate d after a decrease from wmax: C·(d−K)³ + wmax, with
// K = ∛(wmax·(1−β)/C), at least MinRequestsPerSecond.
func (s *memStore) cubic(wmax float64, d time.Duration) float64 {
	c, beta := s.cfg.RecoveryScale, s.cfg.DecreaseFactor
	k := math.Cbrt(wmax * (1 - beta) / c)
	x := d.Seconds() - k
	return max(c*x*x*x+wmax, s.cfg.MinRequestsPerSecond)
}
