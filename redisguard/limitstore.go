package redisguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
)

// presenceEvery is how often a LimitStore counts itself in Redis (on its
// first call after that); a store not seen for three times as long no
// longer counts. The count sets the default share of a store failing open.
const presenceEvery = 5 * time.Second

// LimitStoreConfig configures a LimitStore; NewLimitStore copies it. Only
// Name is required; every other field's zero value is a documented
// default.
type LimitStoreConfig struct {
	// Name names the limits: the Limiters of every process that uses a
	// store of this Name and Prefix on one Redis share one rate per key.
	// Required. A provider limits an account, so give each account its
	// own Name, such as "openai-prod".
	Name string
	// Prefix begins every key, as in "rate:{httpguard:Name:…}:requests".
	// Empty means "httpguard". It may not hold ':', '{' or '}', nor Name
	// '{' or '}' (see BudgetStoreConfig.Prefix).
	Prefix string

	// Timeout bounds each Redis call, whatever the client's own timeouts
	// (a client without ContextTimeoutEnabled is left to finish in the
	// background), the wait for one of the client's connections included:
	// give the client a PoolSize for the requests a process sends at once.
	// Zero means DefaultTimeout.
	Timeout time.Duration

	// FailOpenShare is the share of each limit a process keeps while Redis
	// does not answer: it then paces its requests with a local
	// httpguard.MemoryLimitStore at that fraction of the rate and of the
	// burst (a burst of 1 at least; a request of more tokens than that
	// burst goes once the bucket is full, leaving it in debt), so that the
	// fleet stays near the limit. Zero means 1/N, N being the stores of this Name that called
	// Redis in the last 15 seconds (each counts itself every 5), or 1 for
	// a store that never reached it. In [0, 1].
	FailOpenShare float64
	// FailClosed makes the store fail closed instead: while Redis does not
	// answer, Take fails with ErrUnavailable and the Limiter refuses every
	// request. FailOpenShare must then be zero.
	FailClosed bool
	// ProbeInterval is how often a store that lost Redis checks whether it
	// is back, and, back on Redis, whether the other stores are back too.
	// Zero means DefaultProbeInterval.
	ProbeInterval time.Duration

	// OnFailover, when set, is told each time the store loses Redis and
	// each time it has Redis back. It runs on the goroutine that noticed,
	// so it should return quickly.
	OnFailover func(FailoverEvent)
	// Logger, when set, receives a warning when the store loses Redis and
	// a record when it has it back, and one at the first call that reaches
	// Redis when Redis may evict the store's keys. Nil means silent.
	Logger *slog.Logger
}

func (c *LimitStoreConfig) validate() error {
	switch {
	case c.Name == "":
		return errors.New(`Name is required: it names the limits the fleet shares, such as "openai-prod"`)
	case strings.ContainsAny(c.Prefix, ":{}"):
		return fmt.Errorf("Prefix must not hold ':', '{' or '}' (keys begin {Prefix:Name}: a Prefix with a colon would share keys with another Prefix and Name), got %q", c.Prefix)
	case strings.ContainsAny(c.Name, "{}"):
		return fmt.Errorf("Name must not hold '{' or '}' (keys begin with the Redis hash tag {Prefix:Name}), got %q", c.Name)
	case c.Timeout < 0:
		return fmt.Errorf("Timeout must be >= 0, got %v", c.Timeout)
	case !(c.FailOpenShare >= 0 && c.FailOpenShare <= 1):
		return fmt.Errorf("FailOpenShare must be in [0, 1], got %v", c.FailOpenShare)
	case c.FailClosed && c.FailOpenShare != 0:
		return fmt.Errorf("FailOpenShare must be 0 with FailClosed, got %v", c.FailOpenShare)
	case c.ProbeInterval < 0:
		return fmt.Errorf("ProbeInterval must be >= 0, got %v", c.ProbeInterval)
	}
	return nil
}

func (c LimitStoreConfig) withDefaults() LimitStoreConfig {
	if c.Prefix == "" {
		c.Prefix = "httpguard"
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	return c
}

// LimitStore is an httpguard.LimitStore in Redis, so that the Limiters of
// many processes share one rate per key: set it as LimitConfig.Store. Its
// buckets are github.com/go-redis/redis_rate's GCRA, on the Redis server's
// clock; a token estimate is corrected (Adjust) by a script of its own on
// redis_rate's format, and a pause set by one process's 429 holds in
// every process. It is an httpguard.AdaptiveLimitStore: the key's adaptive
// rate is the fleet's, cut once per round by any process's 429, from the
// rate the fleet was accepted at (limitfleet.go). It is an
// httpguard.TurnLimitStore too: a turn's tokens are taken by a script of
// its own on redis_rate's format, which tells the turn's end, and the
// turn's credit gives back only what the bucket still owes of them. And
// it is an httpguard.AheadLimitStore: the same script takes both buckets'
// turns as soon as they are due within a round trip, so that the Limiter
// does not lose a turn asked a moment before its time.
//
// Take is several calls, not one atomic step: it reads the pause, then
// takes from the requests bucket, then from the tokens bucket, and gives
// the request back when the tokens refuse. In between, a concurrent Take
// may be refused by a request that is being given back: the store may
// admit a little less than the limits, never more.
//
// When Redis does not answer within Timeout, the store fails open by
// default, to a local store holding a share of each limit (see
// FailOpenShare), or closed with FailClosed; it probes Redis and goes back
// to it by itself, and sets there the pauses it was told of meanwhile.
// Back from failing open, it keeps to its share as well as to Redis until
// the other stores are back too (limitrejoin.go).
//
// Make one with NewLimitStore; the zero value is not usable. Close it when
// done. A LimitStore is safe for concurrent use by multiple goroutines.
type LimitStore struct {
	cfg      LimitStoreConfig
	call     caller
	link     link
	local    *httpguard.MemoryLimitStore // the local share; nil: fail closed
	id       string                      // this store in the presence set
	presence string
	every    time.Duration    // presenceEvery; tests shorten it
	now      func() time.Time // this process's wall clock (tests replace it)
	nextBeat atomic.Int64     // when to count in again (Unix ns)
	replicas atomic.Int64     // the stores counted at the last count
	rejoin   rejoin           // the way back to Redis (limitrejoin.go)
	// givingBack counts the give-backs of requests (giveBack) still
	// running, which Close waits for.
	givingBack sync.WaitGroup
	keys       keyCache
	evict      evictionCheck // whether Redis's eviction policy was checked (see takeShared)

	mu         sync.Mutex
	pauses     map[string]time.Time // pauses Redis has not recorded yet, by limiter key
	charges    map[string]keptDebit // token debits Redis has not recorded yet, by limiter key
	localTaken map[string]localTake // tokens the local share took, by limiter key
	admitted   map[string]admitted  // requests admitted not yet counted in Redis (limitfleet.go)
	countEvery time.Duration        // admitCountEvery; tests change it
	rates      map[string]readRate  // the adaptive rates Redis gave last (limitfleet.go)
}

var _ httpguard.AheadLimitStore = (*LimitStore)(nil)

// NewLimitStore returns a store on client (a single node, Sentinel or
// Cluster client), or an error saying which field of c is invalid. It does
// not contact Redis before its first call.
func NewLimitStore(client redis.UniversalClient, c LimitStoreConfig) (*LimitStore, error) {
	if client == nil {
		return nil, errors.New("redisguard: limit store: client is nil")
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("redisguard: limit store: %w", err)
	}
	c = c.withDefaults()
	var id [8]byte
	rand.Read(id[:])
	s := &LimitStore{
		cfg:        c,
		call:       newCaller(client, c.Timeout, takeScript, peekScript, adjustScript, pauseScript, pausedScript, slowDownScript, presenceScript),
		id:         hex.EncodeToString(id[:]),
		presence:   presenceKey(c.Prefix, c.Name),
		every:      presenceEvery,
		now:        time.Now,
		keys:       keyCache{prefix: c.Prefix, name: c.Name},
		pauses:     make(map[string]time.Time),
		charges:    make(map[string]keptDebit),
		localTaken: make(map[string]localTake),
		admitted:   make(map[string]admitted),
		countEvery: admitCountEvery,
		rates:      make(map[string]readRate),
	}
	s.link = link{
		what:     fmt.Sprintf("limiter %q", c.Name),
		failOpen: !c.FailClosed,
		interval: c.ProbeInterval,
		onEvent:  c.OnFailover,
		logger:   c.Logger,
		now:      time.Now,
		recover:  s.recover,
		check:    s.check,
	}
	s.link.init()
	if !c.FailClosed {
		s.local = httpguard.NewMemoryLimitStore()
	}
	return s, nil
}

// Take implements httpguard.LimitStore.
func (s *LimitStore) Take(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, error) {
	wait, by, _, err := s.TakeTurn(ctx, key, reqs, toks, n)
	return wait, by, err
}

// TakeTurn implements httpguard.TurnLimitStore. The end of a turn taken on
// Redis is the tokens bucket's time after it, in nanoseconds since
// 2017-01-01 on the server's clock, its lowest bit telling whether the
// local share took the turn too (see shareTookToo); a turn taken from the
// local share, as Redis does not answer, has none (httpguard.NoTurnEnd),
// and its credit is Adjust's.
func (s *LimitStore) TakeTurn(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, int64, error) {
	return s.takeTurn(ctx, key, reqs, toks, n, 0)
}

// TakeTurnAhead implements httpguard.AheadLimitStore: a turn the buckets
// on Redis will have within ahead of the server's now is taken, and its
// wait is how long until then. While Redis does not answer, the local
// share takes turns only at their time, as TakeTurn does.
func (s *LimitStore) TakeTurnAhead(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64, error) {
	return s.takeTurn(ctx, key, reqs, toks, n, max(ahead, 0))
}

// takeTurn is TakeTurnAhead; TakeTurn with ahead 0.
func (s *LimitStore) takeTurn(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64, error) {
	if interval(toks) == 0 {
		n = 0
	}
	if n < 0 || n > toks.Burst {
		return 0, "", httpguard.NoTurnEnd, fmt.Errorf("redisguard: %s: %d tokens asked of a bucket of %d", s.link.what, n, toks.Burst)
	}
	var wait time.Duration
	var by httpguard.ThrottleReason
	end := httpguard.NoTurnEnd
	if done, err := s.link.onRedis(ctx, key, func() (err error) {
		if s.rejoin.on.Load() {
			wait, by, end, err = s.takeRejoining(ctx, key, reqs, toks, n, ahead)
		} else {
			wait, by, end, err = s.takeShared(ctx, key, reqs, toks, n, ahead)
		}
		return err
	}); done {
		return wait, by, end, err
	}
	if s.local == nil {
		return 0, "", httpguard.NoTurnEnd, s.link.unavailable("refusing every request (fail closed)")
	}
	wait, by, err := s.takeShare(ctx, key, reqs, toks, n)
	if err == nil && wait == 0 && n > 0 {
		s.takeLocal(key, n)
	}
	return wait, by, httpguard.NoTurnEnd, err
}

// takeShare takes from the local share: share of each limit.
func (s *LimitStore) takeShare(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, error) {
	share := s.share()
	reqs, toks = scale(reqs, share), scale(toks, share)
	// A request estimated at more than the share's burst is taken whole,
	// once the share's bucket is full, leaving it in debt: charged only
	// the burst (and credited its overestimate later), it would let the
	// process send more than its share of the tokens.
	toks.Burst = max(toks.Burst, n)
	return s.local.Take(ctx, key, reqs, toks, n)
}

// localTakeHorizon is how long the store remembers the tokens its local
// share took, for the credits of their answers (streams included) that
// come once Redis is back.
const localTakeHorizon = 15 * time.Minute

// localTake is the tokens the local share took for one limiter key, less
// the credits given back since, remembered until the horizon.
type localTake struct {
	tokens int64
	until  time.Time
}

// takeLocal records that the local share took n tokens for key.
func (s *LimitStore) takeLocal(key string, n int64) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.localTaken) >= maxKeptPauses {
		for k, e := range s.localTaken {
			if !e.until.After(now) {
				delete(s.localTaken, k)
			}
		}
		if len(s.localTaken) >= maxKeptPauses {
			return // Redis may be given back up to a burst of this key's tokens
		}
	}
	e := s.localTaken[key]
	if !e.until.After(now) {
		e.tokens = 0
	}
	s.localTaken[key] = localTake{tokens: min(e.tokens, math.MaxInt64-n) + n, until: now.Add(localTakeHorizon)}
}

// untakeLocal takes up to c tokens of a credit from those the local share
// took for key, and returns how many.
func (s *LimitStore) untakeLocal(key string, c int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.localTaken[key]
	if !ok {
		return 0
	}
	if !e.until.After(time.Now()) {
		delete(s.localTaken, key)
		return 0
	}
	c = min(c, e.tokens)
	if e.tokens -= c; e.tokens == 0 {
		delete(s.localTaken, key)
	} else {
		s.localTaken[key] = e
	}
	return c
}

// takeShared reads the pause, then takes a request and n tokens (see
// takeBucket), as soon as the buckets will have them within ahead of now,
// giving the request back when the tokens refuse. A turn taken returns how
// long until both buckets have it, and, when it took tokens, its end (see
// TakeTurn). A refusal's wait is the longer of the two buckets', as if
// they were one step: when the requests refuse, the tokens bucket is read
// (peekScript, taking nothing) for its own wait. A pause read is
// also set in the local share, so that it still holds in this process
// should Redis go away before it ends.
func (s *LimitStore) takeShared(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64, error) {
	none := httpguard.NoTurnEnd
	k := s.keys.of(key)
	call := s.call.alone(&k.heard)
	if err := s.countInIfDue(ctx, call); err != nil {
		return 0, "", none, err
	}
	if err := s.evict.check(ctx, call, s.cfg.Logger, s.link.what, "Redis may evict the limiter's keys when short of memory, "+
		"forgetting its buckets (a burst more for the fleet) and pauses (the fleet sends while the provider asked it to wait)"); err != nil {
		return 0, "", none, err // nothing taken
	}
	if left, err := s.paused(ctx, call, key, k); err != nil || left > 0 {
		if left > 0 && s.local != nil {
			s.local.Pause(ctx, key, left)
		}
		return left, httpguard.ThrottlePaused, none, err
	}
	ri, ti := interval(reqs), interval(toks)
	var wait time.Duration
	if ri > 0 {
		took, rw, _, err := s.takeBucket(ctx, call, k.rateRequests, reqs.Burst, ri, 1, ahead)
		if err != nil {
			return 0, "", none, err
		}
		if !took {
			wait, by := rw, httpguard.ThrottleRequests
			if n > 0 {
				// Asking for 0 tokens takes none and tells how far the
				// bucket's time is ahead of now (ResetAfter); n tokens fit
				// once it is no more than (Burst-n)·t ahead.
				reset, err := s.peek(ctx, call, k.rateTokens)
				if err != nil {
					return 0, "", none, err
				}
				ahead := time.Duration(min(float64(toks.Burst-n)*float64(ti), float64(reset)))
				if tw := reset - ahead; tw > wait {
					wait, by = tw, httpguard.ThrottleTokens
				}
			}
			return wait, by, none, nil
		}
		wait = rw
	}
	end := none
	if n > 0 {
		took, tw, tat, err := s.takeBucket(ctx, call, k.rateTokens, toks.Burst, ti, n, ahead)
		if err != nil {
			return 0, "", none, err
		}
		if !took {
			if ri > 0 {
				if err := s.giveBack(ctx, call, k, reqs.Burst, ri); err != nil {
					return 0, "", none, err
				}
			}
			return tw, httpguard.ThrottleTokens, none, nil
		}
		wait, end = max(wait, tw), redisOnly(tat) // see shareTookToo
	}
	if ri > 0 {
		s.admit(key)
	}
	return wait, "", end, nil
}

// giveBack gives back the request a Take took from k's requests bucket
// (refilling one every ri) when its tokens refused. The give-back is due
// whatever the caller does, so it runs without the caller's end, but the
// caller does not wait for it past that end (a Redis that stalls right
// then would hold it a whole Timeout more): the refusal stands, and the
// give-back finishes in the background (Close waits for it). A give-back
// that fails fails the store over, whether or not the caller still waits,
// unless it waited for the client while Redis answered others (a
// queuedError): the request stays taken, and the store admits a little
// less.
func (s *LimitStore) giveBack(ctx context.Context, call caller, k *limitKeys, burst int64, ri time.Duration) error {
	done := make(chan error, 1)
	s.givingBack.Add(1)
	go func() {
		defer s.givingBack.Done()
		err := s.adjustShared(context.WithoutCancel(ctx), call, k, k.rateRequests, burst, ri, -1, httpguard.NoTurnEnd, "")
		if err != nil && !errors.As(err, new(queuedError)) {
			s.link.fail(err)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}

// takeBucket takes n tokens from bucket (with redis_rate's "rate:"),
// refilling one every t, as soon as it will have them within ahead of now
// (see takeScript). It reports whether it took them, how long until the
// bucket has them (a refusal's wait is never 0), and the bucket's time
// after a take, in nanoseconds since 2017-01-01 on the server's clock.
func (s *LimitStore) takeBucket(ctx context.Context, call caller, bucket string, burst int64, t time.Duration, n int64, ahead time.Duration) (took bool, wait time.Duration, end int64, err error) {
	v, err := call.script(ctx, takeScript, []string{bucket},
		seconds(t), strconv.FormatInt(burst, 10), strconv.FormatInt(n, 10), seconds(ahead))
	if err != nil {
		return false, 0, 0, err
	}
	bad := fmt.Errorf("redisguard: %s: unexpected reply %v to a take", s.link.what, v)
	a, ok := v.([]any)
	if !ok || len(a) < 2 {
		return false, 0, 0, bad
	}
	took = a[0] == int64(1)
	if took != (len(a) == 3) {
		return false, 0, 0, bad
	}
	// Seconds, 272 years either side of 2017: a server whose clock reads
	// before 2017 keeps its buckets below zero, as redis_rate does.
	f, ok := parseSeconds(a[len(a)-1])
	if !ok {
		return false, 0, 0, bad
	}
	wait = time.Duration(f * float64(time.Second))
	if !took {
		return false, max(wait, time.Nanosecond), 0, nil
	}
	tat, ok := parseSeconds(a[1])
	if !ok {
		return false, 0, 0, bad
	}
	return true, max(wait, 0), int64(math.Round(tat * 1e9)), nil
}

// parseSeconds reads a time takeScript returns: a string of seconds,
// within 272 years of 2017.
func parseSeconds(v any) (float64, bool) {
	str, _ := v.(string)
	f, err := strconv.ParseFloat(str, 64)
	return f, err == nil && math.Abs(f) < 1<<33
}

// peek returns how far bucket's time (with redis_rate's "rate:") is
// ahead of now: the ResetAfter of redis_rate's AllowN for 0 tokens (see
// peekScript).
func (s *LimitStore) peek(ctx context.Context, call caller, bucket string) (time.Duration, error) {
	v, err := call.script(ctx, peekScript, []string{bucket})
	if err != nil {
		return 0, err
	}
	f, ok := parseSeconds(v)
	if !ok {
		return 0, fmt.Errorf("redisguard: %s: unexpected reply %v to a peek", s.link.what, v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// paused returns how long k's pause still lasts, counting in Redis the
// requests admitted for key since the last count, and keeps the adaptive
// rate read with it.
func (s *LimitStore) paused(ctx context.Context, call caller, key string, k *limitKeys) (time.Duration, error) {
	a, age := s.takeAdmitted(key, false)
	v, err := call.script(ctx, pausedScript, []string{k.pause, k.adapt}, a.n, seconds(age))
	if err != nil {
		s.unadmit(key, a)
		return 0, err
	}
	left, ar, err := parseFleetReply(v)
	if err != nil {
		return 0, err
	}
	s.keepRate(key, ar)
	return left, nil
}

// Pause implements httpguard.LimitStore. A pause Redis cannot take now
// holds in the local share, and is set in Redis when it is back, for the
// time it has left.
func (s *LimitStore) Pause(ctx context.Context, key string, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	if done, err := s.link.onRedis(ctx, key, func() error { return s.pauseShared(ctx, s.keys.of(key), d) }); done {
		return err
	}
	until := time.Now().Add(d)
	s.mu.Lock()
	down := s.link.isDown()
	if down {
		s.keepPause(key, until)
	}
	s.mu.Unlock()
	if !down { // Redis came back meanwhile
		return s.Pause(ctx, key, time.Until(until))
	}
	if s.local == nil {
		return s.link.unavailable("keeping the pause to set when it is back")
	}
	return s.local.Pause(ctx, key, d)
}

// maxKeptPauses bounds the pauses kept for Redis: beyond it, those over
// are dropped first.
const maxKeptPauses = 10_000

// keepPause keeps a pause to set in Redis when it is back; s.mu is held.
func (s *LimitStore) keepPause(key string, until time.Time) {
	if len(s.pauses) >= maxKeptPauses {
		now := time.Now()
		for k, u := range s.pauses {
			if !u.After(now) {
				delete(s.pauses, k)
			}
		}
		if len(s.pauses) >= maxKeptPauses {
			return // the local share still holds it
		}
	}
	if until.After(s.pauses[key]) {
		s.pauses[key] = until
	}
}

func (s *LimitStore) pauseShared(ctx context.Context, k *limitKeys, d time.Duration) error {
	_, err := s.call.script(ctx, pauseScript, []string{k.pause}, strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
	return err
}

// Adjust implements httpguard.LimitStore. A correction goes to the store
// in use when it comes, Redis or the local share; a debit (n > 0) made
// while Redis is away is also kept, and taken from Redis's bucket when it
// is back (see keptDebit). A credit that comes on
// Redis gives it back only what exceeds the tokens the local share took
// lately and no credit has given back yet: Redis never took those (a
// request may have been taken locally and be corrected once Redis is
// back), and the store admits less rather than more.
func (s *LimitStore) Adjust(ctx context.Context, key string, toks httpguard.BucketLimit, n int64) error {
	return s.adjust(ctx, key, toks, n, httpguard.NoTurnEnd)
}

// CreditTurn implements httpguard.TurnLimitStore: a credit of a turn
// taken on Redis gives it back only what its tokens bucket still owes of
// the turn's tokens (see adjustScript). While Redis does not answer, it
// gives the local share nothing: the share never took them; nor while the
// store rejoins, unless the share took the turn too. A turn of no end (the
// share's) is credited as Adjust credits.
func (s *LimitStore) CreditTurn(ctx context.Context, key string, toks httpguard.BucketLimit, end, n int64) error {
	if n <= 0 {
		return nil
	}
	return s.adjust(ctx, key, toks, -n, end)
}

// adjust is Adjust when end is httpguard.NoTurnEnd, and otherwise the
// credit of a turn Redis took, which ended at end: none of it is the local
// share's, and while Redis is away it is dropped (Redis admits less once
// back, never more).
func (s *LimitStore) adjust(ctx context.Context, key string, toks httpguard.BucketLimit, n, end int64) error {
	t := interval(toks)
	if t == 0 || n == 0 {
		return nil
	}
	shared := n
	if n < 0 && end == httpguard.NoTurnEnd {
		// The turn may have been the local share's.
		shared += s.untakeLocal(key, -max(n, -math.MaxInt64))
	}
	var corrected bool // the local share, once: Redis may fail after
	// A debit's token: a debit whose call fails may have run all the
	// same (a Redis that stalled runs it once it goes on), and the
	// debit kept for Redis counts once (see keptDebit).
	var token string
	var sent bool
	if n > 0 {
		token = newCreditToken()
	}
	if done, err := s.link.onRedis(ctx, key, func() error {
		if s.rejoin.on.Load() && (end == httpguard.NoTurnEnd || tookByShare(end)) {
			// Rejoining, the share takes every request too: it is
			// corrected as Redis is, but for the credit of a turn
			// Redis alone took, before the outage.
			s.local.Adjust(ctx, key, scale(toks, s.share()), n)
			corrected = true
		}
		if shared == 0 {
			return nil
		}
		k := s.keys.of(key)
		sent = true
		return s.adjustShared(ctx, s.call, k, k.rateTokens, toks.Burst, t, shared, end, token)
	}); done {
		return err
	}
	if n > 0 {
		s.mu.Lock()
		down := s.link.isDown()
		if down {
			if !sent {
				token = ""
			}
			s.keepDebit(key, toks, n, token)
		}
		s.mu.Unlock()
		if !down { // Redis came back meanwhile
			return s.adjust(ctx, key, toks, n, end)
		}
	}
	if s.local == nil {
		if n > 0 {
			return s.link.unavailable(fmt.Sprintf("keeping the debit of %d tokens to take when it is back", n))
		}
		return s.link.unavailable("dropping a token credit")
	}
	if corrected || n < 0 && end != httpguard.NoTurnEnd {
		// A credit of a turn Redis took: the share took none of it.
		return nil
	}
	return s.local.Adjust(ctx, key, scale(toks, s.share()), n)
}

// adjustShared moves bucket, one of k's kept as redis_rate keeps it, by n
// tokens refilling one every t (see adjustScript); a credit of a turn
// whose end takeTokens told gives back only what the bucket still owes of
// it. A credit carries a token of its own, so that it counts once however
// often it is sent; a debit carries token, unless "" (see keptDebit).
func (s *LimitStore) adjustShared(ctx context.Context, call caller, k *limitKeys, bucket string, burst int64, t time.Duration, n, end int64, token string) error {
	until := ""
	if n < 0 {
		token = newCreditToken()
		if end != httpguard.NoTurnEnd {
			until = strconv.FormatInt(end, 10)
		}
	}
	_, err := call.script(ctx, adjustScript, []string{bucket, k.credits},
		strconv.FormatFloat(t.Seconds(), 'f', -1, 64), strconv.FormatInt(burst, 10), strconv.FormatInt(n, 10),
		token, creditHorizonMs, until)
	return err
}

// keptDebit is the tokens debited for a limiter key while Redis was away
// (usage above a request's estimate), to take from Redis's bucket when it
// is back: the requests may have been taken there, before the outage, at
// their estimates, and the provider counts what they used. A debit of a
// request the local share took is taken from Redis too, which never took
// its estimate: the store admits a little less after the outage, never
// more. A debit whose call failed may have run all the same (a Redis that
// stalled runs it once it goes on): it is kept with the token it was sent
// with, so that Redis takes it once (see adjustScript).
type keptDebit struct {
	toks  httpguard.BucketLimit
	n     int64       // the debits never sent
	sent  []sentDebit // the debits whose call failed, which may have run
	until time.Time   // when the bucket would have refilled the debits: then they are dropped
}

// sentDebit is a debit of n tokens sent to Redis with token, whose call
// failed.
type sentDebit struct {
	token string
	n     int64
}

// maxSentDebits bounds the sent debits kept for a key: those beyond are
// kept as never sent, and Redis may take them twice (it admits less,
// never more).
const maxSentDebits = 64

// total is the tokens of d's debits.
func (d *keptDebit) total() int64 {
	n := d.n
	for _, sd := range d.sent {
		n = min(n, math.MaxInt64-sd.n) + sd.n
	}
	return n
}

// merge adds the debits of e, kept later, to d's.
func (d *keptDebit) merge(e keptDebit) {
	d.toks = e.toks
	d.n = min(d.n, math.MaxInt64-e.n) + e.n
	for _, sd := range e.sent {
		if len(d.sent) < maxSentDebits {
			d.sent = append(d.sent, sd)
		} else {
			d.n = min(d.n, math.MaxInt64-sd.n) + sd.n
		}
	}
	if e.until.After(d.until) {
		d.until = e.until
	}
}

// keepDebit keeps a debit of n tokens for key, to take from Redis when it
// is back, sent with token ("" when it was not sent); s.mu is held. A debit of n tokens weighs on a bucket for at most
// (Burst+n) refill intervals (it cannot be more than a burst in debt
// before it): by then the bucket would have refilled it, had Redis taken
// it at once, and it is dropped.
func (s *LimitStore) keepDebit(key string, toks httpguard.BucketLimit, n int64, token string) {
	t := interval(toks)
	now := time.Now()
	if len(s.charges) >= maxKeptPauses {
		for k, d := range s.charges {
			if !d.until.After(now) {
				delete(s.charges, k)
			}
		}
		if len(s.charges) >= maxKeptPauses {
			return // Redis admits up to these tokens more once back
		}
	}
	d := s.charges[key]
	if !d.until.After(now) {
		d = keptDebit{}
	}
	e := keptDebit{toks: toks, n: n}
	if token != "" {
		e = keptDebit{toks: toks, sent: []sentDebit{{token, n}}}
	}
	d.merge(e)
	refill := time.Duration(min(float64(toks.Burst+d.total())*float64(t), float64(localTakeHorizon)))
	if until := now.Add(refill); until.After(d.until) {
		d.until = until
	}
	s.charges[key] = d
}

// creditHorizon is how long Redis remembers a credit's token, so that the
// same credit sent again within it (go-redis retrying a script whose reply
// it lost) gives its tokens back once. go-redis's retries end long before.
const creditHorizon = time.Minute

var creditHorizonMs = strconv.FormatInt(creditHorizon.Milliseconds(), 10)

// newCreditToken returns a credit's token, unique in the fleet.
func newCreditToken() string { return fmt.Sprintf("%016x", mrand.Uint64()) }

// countInIfDue counts the store in the presence set when its last count is
// presenceEvery old, and keeps the number of stores counted.
func (s *LimitStore) countInIfDue(ctx context.Context, call caller) error {
	now := s.now().UnixNano()
	next := s.nextBeat.Load()
	if !due(now, next, s.every) || !s.nextBeat.CompareAndSwap(next, now+int64(s.every)) {
		return nil
	}
	return s.countWith(ctx, call)
}

// due reports whether a time scheduled at next, every after the moment it
// was set, has come by now (Unix ns, this process's wall clock): when now
// has reached it, or when next is further ahead than every, as it is only
// once the clock has stepped back (NTP correcting a clock that ran ahead,
// a VM resumed), which would otherwise put it off by as long as the step.
func due(now, next int64, every time.Duration) bool {
	return now >= next || next-now > int64(every)
}

func (s *LimitStore) countIn(ctx context.Context) error { return s.countWith(ctx, s.call) }

// countWith is countIn, calling Redis with call.
func (s *LimitStore) countWith(ctx context.Context, call caller) error {
	n, _, err := s.count(ctx, call, 0)
	if err == nil {
		s.replicas.Store(n)
	}
	return err
}

// count counts the store in the presence set, and returns how many stores
// it holds and how many of them counted in within the last lost.
func (s *LimitStore) count(ctx context.Context, call caller, lost time.Duration) (n, back int64, err error) {
	v, err := call.script(ctx, presenceScript, []string{s.presence}, s.id, strconv.FormatInt((3*s.every).Milliseconds(), 10),
		strconv.FormatInt(lost.Milliseconds(), 10))
	if err != nil {
		return 0, 0, err
	}
	if a, ok := v.([]any); ok && len(a) == 2 {
		n, _ = a[0].(int64)
		back, _ = a[1].(int64)
	}
	return n, back, nil
}

// share is the fraction of each limit the local store holds: while it
// rejoins, of the stores it counted before the outage at least.
func (s *LimitStore) share() float64 {
	if s.cfg.FailOpenShare > 0 {
		return s.cfg.FailOpenShare
	}
	n := s.replicas.Load()
	if s.rejoin.on.Load() {
		n = max(n, s.rejoin.expect.Load())
	}
	return 1 / float64(max(n, 1))
}

// scale returns share of b: of its rate, and of its burst, 1 at least.
func scale(b httpguard.BucketLimit, share float64) httpguard.BucketLimit {
	if interval(b) == 0 {
		return httpguard.BucketLimit{}
	}
	return httpguard.BucketLimit{Rate: b.Rate * share, Burst: max(1, int64(float64(b.Burst)*share))}
}

// replayDebit takes d, the debits kept for limiter key, from Redis's
// bucket: each sent one with its token, then the others with a token of
// their own. On an error, d holds what is still to take, each debit whose
// call failed with the token it was sent with.
func (s *LimitStore) replayDebit(ctx context.Context, key string, d *keptDebit) error {
	k := s.keys.of(key)
	t := interval(d.toks)
	for len(d.sent) > 0 {
		sd := d.sent[0]
		if err := s.adjustShared(ctx, s.call, k, k.rateTokens, d.toks.Burst, t, sd.n, httpguard.NoTurnEnd, sd.token); err != nil {
			return err
		}
		d.sent = d.sent[1:]
	}
	if d.n > 0 {
		sd := sentDebit{newCreditToken(), d.n}
		if err := s.adjustShared(ctx, s.call, k, k.rateTokens, d.toks.Burst, t, sd.n, httpguard.NoTurnEnd, sd.token); err != nil {
			d.n, d.sent = 0, []sentDebit{sd}
			return err
		}
		d.n = 0
	}
	return nil
}

// check asks Redis whether limiter key's pause exists (the presence set's,
// for no key), on the node of key's buckets: an answer says that Redis
// answers (see link.suspect).
func (s *LimitStore) check(ctx context.Context, key string) error {
	k, call := s.presence, s.call
	if key != "" {
		lk := s.keys.of(key)
		k, call = lk.pause, s.call.alone(&lk.heard)
	}
	_, err := call.do(ctx, func(ctx context.Context) (any, error) {
		return s.call.client.Exists(ctx, k).Result()
	})
	return err
}

// recover is the link's probe: when Redis answers, the store counts itself
// in again, sets the pauses it was told of meanwhile, takes the token
// debits made meanwhile (keptDebit), and goes back to Redis, rejoining the
// fleet (limitrejoin.go).
func (s *LimitStore) recover(ctx context.Context) (httpguard.Money, time.Duration, bool) {
	// Back are the stores counted in since Redis last failed this one: one
	// counted in before may have lost Redis again since (Redis flapped).
	lostAt := s.link.lastFailure()
	if err := s.call.reload(ctx); err != nil {
		s.link.fail(err)
		return 0, 0, false
	}
	n, back, err := s.count(ctx, s.call, time.Since(lostAt))
	if err != nil {
		s.link.fail(err)
		return 0, 0, false
	}
	for {
		s.mu.Lock()
		if len(s.pauses) == 0 && len(s.charges) > 0 {
			var key string
			var d keptDebit
			for key, d = range s.charges {
				break
			}
			delete(s.charges, key)
			s.mu.Unlock()
			if d.until.After(time.Now()) {
				if err := s.replayDebit(ctx, key, &d); err != nil {
					s.mu.Lock()
					if again, ok := s.charges[key]; ok { // kept meanwhile
						d.merge(again)
					}
					s.charges[key] = d
					s.mu.Unlock()
					s.link.fail(err)
					return 0, 0, false
				}
			}
			continue
		}
		if len(s.pauses) == 0 {
			expect := s.replicas.Load()
			if s.rejoin.on.Load() {
				expect = max(expect, s.rejoin.expect.Load())
			}
			s.replicas.Store(n)
			s.startRejoin(expect, back, lostAt)
			// Up under s.mu: no pause can be kept after the last is set.
			outage := s.link.up()
			s.mu.Unlock()
			return 0, outage, true
		}
		var key string
		var until time.Time
		for key, until = range s.pauses {
			break
		}
		delete(s.pauses, key)
		s.mu.Unlock()
		if d := time.Until(until); d > 0 {
			if err := s.pauseShared(ctx, s.keys.of(key), d); err != nil {
				s.mu.Lock()
				s.keepPause(key, until)
				s.mu.Unlock()
				s.link.fail(err)
				return 0, 0, false
			}
		}
	}
}

// Close ends the store's probes of a Redis that does not answer and
// counts it out of the stores sharing its Name. It does not close the
// client. The store must not be used after Close.
func (s *LimitStore) Close() error {
	s.givingBack.Wait() // each within a Timeout
	s.link.close()
	if s.nextBeat.Load() == 0 || s.link.isDown() {
		return nil
	}
	_, err := s.call.do(context.Background(), func(ctx context.Context) (any, error) {
		return s.call.client.ZRem(ctx, s.presence, s.id).Result()
	})
	return s.link.wrap(err)
}

// interval is the time b takes to refill one token, rounded to the
// nanosecond as httpguard's Limiter rounds it; 0 means no limit (a Rate
// that is not above zero). A Rate above a token a nanosecond, +Inf
// included, refills at one token a nanosecond, as httpguard.BucketLimit
// says: rounded to a zero interval, it would be no limit at all.
func interval(b httpguard.BucketLimit) time.Duration {
	if !(b.Rate > 0) {
		return 0
	}
	return time.Duration(min(max(math.Round(float64(time.Second)/b.Rate), 1), 1<<62))
}

// keyCache keeps the Redis keys of the limiter keys in use, so that the
// hashing of a key is done once, not at every call.
type keyCache struct {
	prefix, name string

	mu   sync.RWMutex
	keys map[string]*limitKeys
}

// maxCachedKeys bounds a keyCache: when it is full, it starts again empty.
const maxCachedKeys = 4096

func (c *keyCache) of(key string) *limitKeys {
	c.mu.RLock()
	k := c.keys[key]
	c.mu.RUnlock()
	if k != nil {
		return k
	}
	k = newLimitKeys(c.prefix, c.name, key)
	c.mu.Lock()
	if c.keys == nil || len(c.keys) >= maxCachedKeys {
		c.keys = make(map[string]*limitKeys)
	}
	c.keys[key] = k
	c.mu.Unlock()
	return k
}
