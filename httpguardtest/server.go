// Package httpguardtest provides an OpenAI-compatible HTTP server that
// injects faults, in the spirit of net/http/httptest: tests, benchmarks and
// demos point a client (or an SDK, with base URL Server.BaseURL, or
// Server.URL for Anthropic's) at it and script how it fails.
//
// The server answers POST /v1/chat/completions (OpenAI shape) and
// POST /v1/messages (Anthropic shape), as JSON or, with "stream": true, as
// server-sent events, with deterministic token usage. Faults (error statuses
// with provider headers, connection resets, slow headers, streams cut short)
// are applied from a FIFO script (Enqueue), at a seeded random rate
// (Config.FaultRate), or to every request during an outage (StartOutage).
// An optional server-side rate limit (Config.RequestsPerSecond) answers 429
// like a provider. Stats and Requests report what the server saw.
//
// It listens on the loopback interface only and needs no network.
package httpguardtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"
)

// Config describes how a Server answers; NewServer copies it. The zero
// value is a server that never fails, has no rate limit, and answers 16
// completion tokens.
type Config struct {
	// CompletionTokens is how many completion tokens a successful answer
	// has, lowered to the request's max_tokens or max_completion_tokens
	// when that is smaller. Zero means 16. It is at most 131072 (128Ki,
	// the largest output of today's models): answers are built in memory.
	// A request whose answer would hold more, over its n choices, gets a
	// 400 invalid_request_error, as a provider refuses a max_tokens above
	// the model's limit, and is not billed.
	CompletionTokens int

	// CachedTokens is how many of the prompt's tokens are reported as
	// served from the prompt cache (OpenAI prompt_tokens_details.cached_tokens,
	// Anthropic cache_read_input_tokens), at most the prompt's tokens.
	// Zero means none.
	CachedTokens int

	// Latency is added before every answer, faulty or not, the 404 of an
	// unknown path and the 405 of a method other than POST included. The
	// wait ends early when the client goes away or the server closes (the
	// connection is then reset, nothing answered). Zero means none.
	Latency time.Duration

	// KeepAlive makes every stream start with a ": keep-alive" SSE comment,
	// as DeepSeek sends while it holds a connection. False sends none.
	KeepAlive bool

	// FaultRate is the probability, in [0, 1], that a request not already
	// failed by an outage, the rate limit or the script gets one of Faults,
	// chosen uniformly. Zero means never.
	FaultRate float64

	// Faults are the faults FaultRate chooses from. It must not be empty
	// when FaultRate is above zero.
	Faults []Fault

	// Seed seeds the random source behind FaultRate (zero is a seed like any
	// other): the same seed gives the same sequence of decisions, request
	// after request, in arrival order.
	Seed uint64

	// RequestsPerSecond, when above zero, makes the server enforce a request
	// rate limit with a token bucket refilled at this rate: a request
	// arriving to an empty bucket gets RateLimited(wait), wait being the
	// time until the bucket holds a request again. Other answers then carry
	// x-ratelimit-limit-requests (Burst), x-ratelimit-remaining-requests
	// (whole requests left) and x-ratelimit-reset-requests (the time until
	// the bucket is full again, OpenAI's "resets to its initial state");
	// on /v1/messages, Anthropic's anthropic-ratelimit-requests-limit,
	// -remaining and -reset (the time the bucket is full, RFC 3339).
	// Requests failed by an outage take nothing from the bucket; the other
	// faults apply only to requests the bucket let through. Zero means no
	// limit.
	RequestsPerSecond float64

	// Burst is the bucket's size: how many requests may arrive at once.
	// Zero means RequestsPerSecond rounded up (at least 1). It needs
	// RequestsPerSecond, as RateLimitHeaders does.
	Burst int

	// RateLimitHeaders selects the headers the rate limit's answers carry.
	// The zero value, AllRateLimitHeaders, sends them all.
	RateLimitHeaders RateLimitHeaders

	// History is how many of the latest requests Requests returns.
	// Zero means 64.
	History int
}

// Server is a running fault-injecting server, created by NewServer (the
// zero value is not usable). Its methods are safe for concurrent use by
// multiple goroutines, also while requests are being served.
type Server struct {
	// URL is the server's base URL, of the form http://127.0.0.1:port,
	// without a trailing slash. OpenAI SDKs take BaseURL instead; the
	// Anthropic SDK, whose paths start with v1/, takes URL.
	URL string

	cfg  Config
	now  func() time.Time
	ts   *httptest.Server
	done chan struct{} // closed by Close, to end waits

	closeOnce sync.Once

	mu       sync.Mutex
	script   []Fault
	outage   *Fault
	rng      *rand.Rand
	bucket   bucket
	stats    Stats
	history  []Request // a ring of cfg.History entries, grown as requests come
	received int64     // requests ever received, indexes history
}

// Stats counts what a Server saw. Stats values are snapshots: changing one
// does not change the server.
type Stats struct {
	// Requests counts requests received, whatever their fate.
	Requests int64
	// Status counts the answers sent, by status code. Resets and requests
	// whose client went away are not answers.
	Status map[int]int64
	// Resets counts connections the server reset on purpose
	// (ConnectionReset and CutStream faults).
	Resets int64
	// RateLimited counts requests refused by the server's own rate limit
	// (Config.RequestsPerSecond) and answered; they are in Status[429] too.
	RateLimited int64
	// PromptTokens, CachedTokens and CompletionTokens add up the usage of
	// successful answers sent to their end, which a client could read
	// (what a provider bills is the Billable counters below).
	// CachedTokens is part of PromptTokens.
	PromptTokens, CachedTokens, CompletionTokens int64
	// BillablePromptTokens, BillableCachedTokens and
	// BillableCompletionTokens add up the usage of every request that
	// reached the model, whether or not its answer made it back: answered
	// in full or cut short, reset after the server read it, or abandoned by
	// the client while the server held it; a scripted answer with a 2xx
	// Status too, at the usage the server would have answered. Only error
	// statuses (300 and above: scripted, from an outage or the rate limit)
	// and requests that are not valid chat requests are left out. It is what a provider that bills every
	// attempt reaching its model may bill; a spend cap must hold against
	// it.
	BillablePromptTokens, BillableCachedTokens, BillableCompletionTokens int64
}

// Request is a request as the server received it.
type Request struct {
	// Method, Path and Header are the request's.
	Method, Path string
	Header       http.Header
	// Body holds the request body, up to 1 MiB.
	Body []byte
}

// maxAnswerTokens bounds the completion tokens of an answer, its n choices
// together: a stream of that many tokens allocates about 80 MB.
const maxAnswerTokens = 1 << 17

// maxRequestBody bounds what the server keeps of a request body (in
// Requests); maxReadBody, what it reads and bills: more than a Budget
// prices (4 MiB by default), as a provider with a long context would.
const (
	maxRequestBody = 1 << 20
	maxReadBody    = 16 << 20
)

// NewServer starts a Server on 127.0.0.1 with configuration c, and returns
// an error when c is invalid. The caller must Close it.
func NewServer(c Config) (*Server, error) {
	return newServer(c, time.Now)
}

func newServer(c Config, now func() time.Time) (*Server, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.CompletionTokens == 0 {
		c.CompletionTokens = 16
	}
	if c.History == 0 {
		c.History = 64
	}
	if c.RequestsPerSecond > 0 && c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(c.RequestsPerSecond)))
	}
	c.Faults = slices.Clone(c.Faults)
	for i, f := range c.Faults {
		c.Faults[i] = f.clone()
	}
	s := &Server{
		cfg:  c,
		now:  now,
		done: make(chan struct{}),
		rng:  rand.New(rand.NewPCG(c.Seed, c.Seed)),
	}
	s.bucket = newBucket(c.RequestsPerSecond, c.Burst, now())
	s.stats.Status = make(map[int]int64)
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.Config.ConnState = s.connState
	s.ts.Start()
	s.URL = s.ts.URL
	return s, nil
}

func (c *Config) validate() error {
	switch {
	case c.CompletionTokens < 0:
		return fmt.Errorf("httpguardtest: CompletionTokens must be >= 0, got %d", c.CompletionTokens)
	case c.CompletionTokens > maxAnswerTokens:
		return fmt.Errorf("httpguardtest: CompletionTokens must be <= %d, got %d", maxAnswerTokens, c.CompletionTokens)
	case c.CachedTokens < 0:
		return fmt.Errorf("httpguardtest: CachedTokens must be >= 0, got %d", c.CachedTokens)
	case c.Latency < 0:
		return fmt.Errorf("httpguardtest: Latency must be >= 0, got %v", c.Latency)
	case !(c.FaultRate >= 0 && c.FaultRate <= 1):
		return fmt.Errorf("httpguardtest: FaultRate must be in [0, 1], got %v", c.FaultRate)
	case c.FaultRate > 0 && len(c.Faults) == 0:
		return errors.New("httpguardtest: FaultRate is above zero but Faults is empty")
	case !(c.RequestsPerSecond >= 0) || math.IsInf(c.RequestsPerSecond, 0):
		return fmt.Errorf("httpguardtest: RequestsPerSecond must be a finite number >= 0, got %v", c.RequestsPerSecond)
	case c.Burst < 0:
		return fmt.Errorf("httpguardtest: Burst must be >= 0, got %d", c.Burst)
	case c.RateLimitHeaders < AllRateLimitHeaders || c.RateLimitHeaders > CoarseRetryAfter:
		return fmt.Errorf("httpguardtest: RateLimitHeaders must be one of the RateLimitHeaders constants, got %d", c.RateLimitHeaders)
	case c.RequestsPerSecond == 0 && c.Burst != 0:
		return fmt.Errorf("httpguardtest: Burst needs RequestsPerSecond: without it there is no rate limit, got Burst %d", c.Burst)
	case c.RequestsPerSecond == 0 && c.RateLimitHeaders != AllRateLimitHeaders:
		return errors.New("httpguardtest: RateLimitHeaders needs RequestsPerSecond: without it there is no rate limit")
	case c.History < 0:
		return fmt.Errorf("httpguardtest: History must be >= 0, got %d", c.History)
	}
	for i, f := range c.Faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("httpguardtest: Faults[%d]: %w", i, err)
		}
	}
	return nil
}

// BaseURL returns the base URL OpenAI SDKs (openai-go, go-openai) take:
// URL + "/v1". Given it, anthropic-sdk-go posts to /v1/v1/messages, a 404:
// it takes URL.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Client returns an HTTP client configured for the server. Close closes its
// idle connections.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close shuts the server down: it ends every wait in progress (Latency,
// slow headers), closes every connection, also those of requests still
// being read or answered, and blocks until all handlers have returned.
// Close may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		// httptest.Server.Close alone waits for active connections, which
		// a client stalled mid-body could hold forever.
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// connState closes a connection that starts or becomes active once Close
// began: Close closes the connections it knows of first, and one accepted
// meanwhile would otherwise hold a handler waiting for a stalled body, and
// Close with it, forever.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateNew && st != http.StateActive {
		return
	}
	select {
	case <-s.done:
		c.Close()
	default:
	}
}

// Enqueue appends faults to the script: the next len(faults) requests that
// are not failed by an outage or the rate limit get them, in order. It
// returns an error, and enqueues nothing, when a fault is invalid.
func (s *Server) Enqueue(faults ...Fault) error {
	for i, f := range faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("httpguardtest: Enqueue: fault %d: %w", i, err)
		}
	}
	s.mu.Lock()
	for _, f := range faults {
		s.script = append(s.script, f.clone())
	}
	s.mu.Unlock()
	return nil
}

// Pending returns how many scripted faults have not been applied yet.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.script)
}

// StartOutage makes every request get f, until EndOutage; the script,
// the rate limit and FaultRate are left alone meanwhile. It returns an
// error when f is invalid.
func (s *Server) StartOutage(f Fault) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("httpguardtest: StartOutage: %w", err)
	}
	f = f.clone()
	s.mu.Lock()
	s.outage = &f
	s.mu.Unlock()
	return nil
}

// EndOutage ends an outage started by StartOutage; it does nothing when
// there is none.
func (s *Server) EndOutage() {
	s.mu.Lock()
	s.outage = nil
	s.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Status = make(map[int]int64, len(s.stats.Status))
	for k, v := range s.stats.Status {
		st.Status[k] = v
	}
	return st
}

// ResetStats sets every counter to zero and forgets the recorded requests.
// The script, the outage, the random source and the rate limit's bucket
// are left as they are.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{Status: make(map[int]int64)}
	s.history = s.history[:0]
	s.received = 0
}

// Requests returns the latest requests received (at most Config.History),
// oldest first. The values are copies.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.history)
	out := make([]Request, 0, n)
	start := 0
	if n == s.cfg.History {
		start = int(s.received % int64(n))
	}
	for i := range n {
		r := s.history[(start+i)%n]
		r.Header = r.Header.Clone()
		r.Body = slices.Clone(r.Body)
		out = append(out, r)
	}
	return out
}

// RetryCounts returns the X-Stainless-Retry-Count header of each of
// Requests, "" where it is absent: the OpenAI and Anthropic SDKs number
// their attempts with it.
func (s *Server) RetryCounts() []string {
	reqs := s.Requests()
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.Header.Get("X-Stainless-Retry-Count")
	}
	return out
}

// A decision is what admit decided for one request.
type decision struct {
	fault       *Fault
	rlHeader    http.Header // the rate limit's headers for every answer, nil without a limit
	rateLimited bool        // fault is the rate limit's refusal
}

// recordLocked counts r and keeps it in the history.
func (s *Server) recordLocked(r *http.Request, body []byte) {
	s.stats.Requests++
	rec := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body[:len(body):len(body)]}
	if len(body) > maxRequestBody {
		// A copy: a slice of body would keep all of it (up to maxReadBody).
		rec.Body = slices.Clone(body[:maxRequestBody])
	}
	if len(s.history) < s.cfg.History {
		s.history = append(s.history, rec)
	} else {
		s.history[s.received%int64(len(s.history))] = rec
	}
	s.received++
}

// record counts and records a request that no fault applies to.
func (s *Server) record(r *http.Request, body []byte) {
	s.mu.Lock()
	s.recordLocked(r, body)
	s.mu.Unlock()
}

// admit counts and records r, a request to api's endpoint, and decides its
// fate, in this order: the outage, the rate limit, the script, the random
// fault rate.
func (s *Server) admit(r *http.Request, body []byte, api apiShape) decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(r, body)

	// Both draws happen for every request so that the sequence of decisions
	// depends only on the seed and the arrival order.
	roll, pick := s.rng.Float64(), 0
	if n := len(s.cfg.Faults); n > 0 {
		pick = s.rng.IntN(n)
	}

	var d decision
	if s.outage != nil {
		f := *s.outage
		d.fault = &f
		return d
	}
	if s.cfg.RequestsPerSecond > 0 {
		now := s.now()
		ok, remaining, reset, wait := s.bucket.take(now)
		if s.cfg.RateLimitHeaders != NoRateLimitHeaders {
			d.rlHeader = rateLimitHeader(api, s.cfg.Burst, remaining, reset, now)
		}
		if !ok {
			f := s.cfg.RateLimitHeaders.fault(wait)
			d.fault = &f
			d.rateLimited = true
			return d
		}
	}
	if len(s.script) > 0 {
		f := s.script[0]
		s.script[0] = Fault{}
		s.script = s.script[1:]
		d.fault = &f
		return d
	}
	if roll < s.cfg.FaultRate {
		f := s.cfg.Faults[pick]
		d.fault = &f
	}
	return d
}

func (s *Server) countStatus(code int) {
	s.mu.Lock()
	s.stats.Status[code]++
	s.mu.Unlock()
}

func (s *Server) countRateLimited() {
	s.mu.Lock()
	s.stats.RateLimited++
	s.mu.Unlock()
}

func (s *Server) countReset() {
	s.mu.Lock()
	s.stats.Resets++
	s.mu.Unlock()
}

func (s *Server) bill(u usage) {
	s.mu.Lock()
	s.stats.PromptTokens += int64(u.prompt)
	s.stats.CachedTokens += int64(u.cached)
	s.stats.CompletionTokens += int64(u.completions())
	s.mu.Unlock()
}

// billAttempt counts the usage of a request that reached the model.
func (s *Server) billAttempt(u usage) {
	s.mu.Lock()
	s.stats.BillablePromptTokens += int64(u.prompt)
	s.stats.BillableCachedTokens += int64(u.cached)
	s.stats.BillableCompletionTokens += int64(u.completions())
	s.mu.Unlock()
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReadBody))
	if err != nil {
		s.record(r, body) // received, not billed: the client went away while sending
		return
	}
	var api apiShape
	switch r.URL.Path {
	case "/v1/chat/completions":
		api = openAI
	case "/v1/messages":
		api = anthropic
	default:
		s.record(r, body)
		s.refuse(w, r, openAI, Fault{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: "unknown path " + r.URL.Path})
		return
	}
	if r.Method != http.MethodPost {
		s.record(r, body)
		s.refuse(w, r, api, Fault{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
			Message: "method " + r.Method + " not allowed"})
		return
	}
	d := s.admit(r, body, api)
	req, u, reqErr := s.parseRequest(api, body)
	if (d.fault == nil || d.fault.Status < 300) && reqErr == nil { // no status, or a 2xx: the model ran
		s.billAttempt(u)
	}

	wait := s.cfg.Latency
	if d.fault != nil {
		// Saturated: a Delay of the largest Duration is a wait for ever, not
		// an overflow to a negative wait, answered at once.
		wait = time.Duration(min(uint64(wait)+uint64(d.fault.Delay), math.MaxInt64))
	}
	if !s.wait(r.Context(), wait) {
		s.resetConn(w, false)
		return
	}
	f := d.fault
	switch {
	case f != nil && f.Reset:
		s.resetConn(w, true)
		return
	case f != nil && f.Status != 0:
		if api == anthropic {
			*f = f.inAnthropicTerms(s.now())
		}
		if d.rateLimited {
			s.countRateLimited() // with its 429, which a client gone meanwhile does not get
		}
		if f.StallBody > 0 {
			w = &stallingWriter{ResponseWriter: w, s: s, ctx: r.Context(), d: f.StallBody}
		}
		s.writeError(w, api, *f, d.rlHeader)
		return
	}
	if reqErr != nil {
		s.writeError(w, api, Fault{Status: http.StatusBadRequest, Type: "invalid_request_error",
			Message: "request body is not a valid chat request: " + reqErr.Error()}, d.rlHeader)
		return
	}
	cut := 0
	if f != nil {
		cut = f.CutAfter
	}
	s.answer(w, api, req, u, d.rlHeader, cut)
}

// refuse answers f, a request the server does not serve (an unknown path
// or method), after Latency, as every answer: a client's timeout fires on
// a wrong URL as on the right one.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, api apiShape, f Fault) {
	if !s.wait(r.Context(), s.cfg.Latency) {
		s.resetConn(w, false)
		return
	}
	s.writeError(w, api, f, nil)
}

// wait waits d, and reports false when the request's context or the server
// ended the wait first.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// resetConn takes the connection over and closes it with SO_LINGER 0, so
// that the peer sees a TCP RST rather than an orderly FIN. When count is
// true the reset is counted first, so that a client seeing it finds it in
// Stats.
func (s *Server) resetConn(w http.ResponseWriter, count bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if count {
		s.countReset()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}
