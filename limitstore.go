package httpguard

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// This file is where the Limiter's buckets live: LimitStore, the interface
// a store shared by a fleet implements, and MemoryLimitStore, the default.
// The buckets are GCRA (the generic cell rate algorithm, as
// github.com/go-redis/redis_rate keeps them): a bucket is one time, its
// "theoretical arrival time", so a store keeps two times and a pause per key
// and needs no clock of the caller's.

// BucketLimit is the limit in force for one token bucket: it refills at
// Rate tokens per second and holds Burst tokens at most. The zero
// BucketLimit means no limit: the bucket is not used. The time to refill a
// token is rounded to the nanosecond, so a Rate above 1e9 refills at 1e9
// tokens per second.
type BucketLimit struct {
	Rate  float64 // tokens per second
	Burst int64
}

// interval is the time the bucket takes to refill one token, rounded to
// the nanosecond: everything the Limiter and MemoryLimitStore compute about
// a bucket is a whole multiple of it, so that they agree to the nanosecond.
// A rate above a token a nanosecond refills at one token a nanosecond: a
// zero interval would mean no limit at all.
func (b BucketLimit) interval() time.Duration {
	if !(b.Rate > 0) {
		return 0
	}
	return time.Duration(min(max(math.Round(float64(time.Second)/b.Rate), 1), float64(maxSpan)))
}

// bucket is a BucketLimit with what the store computes of it on every
// turn worked out once: the Limiter keeps its tokens bucket and its
// requests bucket at the configured rate this way.
type bucket struct {
	BucketLimit
	every time.Duration // interval()
	span  time.Duration // the Burst's refill time: every × Burst
}

func (b BucketLimit) bucket() bucket {
	t := b.interval()
	return bucket{BucketLimit: b, every: t, span: times(b.Burst, t)}
}

// maxSpan bounds the times computed from limits (a century and a half), so
// that a tiny rate or a huge burst cannot overflow them.
const maxSpan = time.Duration(1 << 62)

// times returns n·t, at most maxSpan.
func times(n int64, t time.Duration) time.Duration {
	if n <= 0 || t <= 0 {
		return 0
	}
	// n·t > maxSpan exactly when n > maxSpan/t; the full product spares
	// the division.
	if hi, lo := bits.Mul64(uint64(n), uint64(t)); hi != 0 || lo > uint64(maxSpan) {
		return maxSpan
	}
	return time.Duration(n) * t
}

// A LimitStore keeps the Limiter's per-key state: a requests bucket, a
// tokens bucket and a server pause for each key. The Limiter passes the
// limits in force with every call, since it lowers and raises the request
// rate as the provider answers; the store keeps only the buckets' levels.
// A store shared by several processes (on Redis, say) makes them share one
// rate per key; one that also implements AdaptiveLimitStore makes them
// adapt that rate as one. MemoryLimitStore is the in-process default; the
// suite in package httpguardtest/storetest checks any implementation.
//
// Implementations must be safe for concurrent use and make each call atomic
// per key. Durations are measured on the store's own clock (a Redis store
// reads the server's), so that processes with skewed clocks agree. A key
// the store has never seen, or has dropped, has full buckets and no pause;
// a store may drop a key's state once it is back to that.
//
// The Limiter refuses a request when Take fails (fail closed), and counts
// the failures of Pause and Adjust in LimiterStats.StoreErrors: the pause
// still holds in the process that saw it, and a lost correction only leaves
// a token estimate uncorrected.
type LimitStore interface {
	// Take takes one request from key's requests bucket, limited by reqs,
	// and n tokens from its tokens bucket, limited by toks: both, or
	// neither. When key is paused or either bucket lacks what is asked, it
	// takes nothing and returns how long until the call could succeed
	// (were nothing else taken meanwhile), and by, which refused:
	// ThrottlePaused, ThrottleRequests or ThrottleTokens. It returns a zero
	// wait when it took them. A zero limit is no limit; n is at most
	// toks.Burst.
	Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (wait time.Duration, by ThrottleReason, err error)
	// Pause makes Take refuse key for d from now. It never shortens a
	// pause in force: a pause ending later wins.
	Pause(ctx context.Context, key string, d time.Duration) error
	// Adjust corrects key's tokens bucket, limited by toks, once a
	// request's real usage is known: n > 0 takes n more tokens (a debit,
	// which may leave the bucket in debt, by one Burst at most), n < 0 gives
	// -n back (a credit, which never fills the bucket past Burst).
	Adjust(ctx context.Context, key string, toks BucketLimit, n int64) error
}

// NoTurnEnd is the end of a turn that took no tokens, or whose store
// cannot tell it (see TurnLimitStore).
const NoTurnEnd int64 = math.MinInt64

// A TurnLimitStore is a LimitStore that tells, of each turn that takes
// tokens, its end: when, on the store's clock, the tokens bucket will have
// refilled them. The Limiter passes the end back with the turn's credit,
// when its answer used fewer tokens than estimated, and the store gives
// back only what the bucket still owes of them: those it refilled while
// the answer ran, another turn may have taken since, and giving them back
// again would let the bucket pass more than its limits. The Limiter
// corrects a store without it through Adjust, whole. MemoryLimitStore
// implements it, and so does redisguard's LimitStore.
//
// A store that wraps another by embedding it and overrides Take or Adjust
// must override TakeTurn and CreditTurn too: the Limiter calls them in
// place of Take, and of Adjust's credits.
type TurnLimitStore interface {
	LimitStore
	// TakeTurn is Take, and also returns the end of a turn that took
	// tokens: a value of the store's own, which only its CreditTurn reads;
	// NoTurnEnd when it took none, or cannot tell.
	TakeTurn(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (wait time.Duration, by ThrottleReason, end int64, err error)
	// CreditTurn gives n tokens (n > 0) of a turn that ended at end back
	// to key's tokens bucket, limited by toks: no more than the bucket
	// still owes of the turn's tokens at the store's now, in whole tokens
	// (none once it has refilled them), and never past Burst. With
	// NoTurnEnd it is Adjust(ctx, key, toks, -n).
	CreditTurn(ctx context.Context, key string, toks BucketLimit, end, n int64) error
}

// An AheadLimitStore is a TurnLimitStore that can take a turn ahead of
// its time: the Limiter asks it so on a store across a network, whose
// round trip may be longer than the gap between two turns. A turn asked
// a moment before its time (its ask's trip to the store was quicker than
// the last one's) is then taken and its request goes at its time, where a
// store refusing it would make the request wait for the answer, and ask
// again, a round trip late: a turn the store holds for nobody meanwhile.
// The store stays the authority: it gives each turn a time its limits
// allow, and the request goes no earlier. redisguard's LimitStore
// implements it; MemoryLimitStore, whose round trip is next to none, does
// not need to.
//
// A store that wraps another by embedding it and overrides TakeTurn must
// override TakeTurnAhead too.
type AheadLimitStore interface {
	TurnLimitStore
	// TakeTurnAhead is TakeTurn, but takes the turn when the buckets will
	// have what is asked within ahead (ahead >= 0) of the store's now, and
	// key is not paused: it then returns how long until the turn's time
	// (at most ahead; 0 when it is due), an empty reason and the turn's
	// end. A turn it cannot take so it refuses as TakeTurn does: a wait
	// until the turn could be taken at its time (not ahead of it), and a
	// reason, which is never empty.
	TakeTurnAhead(ctx context.Context, key string, reqs, toks BucketLimit, n int64, ahead time.Duration) (wait time.Duration, by ThrottleReason, end int64, err error)
}

// MemoryLimitStore is a LimitStore that keeps its state in this process,
// the Limiter's default. Make one with NewMemoryLimitStore; the zero value
// is not usable (NewLimiter refuses it, and its methods panic). Its
// buckets are GCRA, as github.com/go-redis/redis_rate keeps them, except
// that a turn taken less than one refill interval late keeps its place
// instead of pushing later turns back (as x/time/rate's reservations do). A key's state is dropped once its buckets are full
// again and its pause is over, as it then holds nothing a new key would
// not: the store keeps only the keys in use. It is safe for concurrent
// use.
type MemoryLimitStore struct {
	now func() time.Time

	// The store's times are nanoseconds since base, the first reading of
	// the clock; started says base is set, for the calls that read it
	// without mu.
	base    time.Time
	started atomic.Bool

	mu sync.Mutex
	// keys holds the states a sweep may drop, and pinned those a
	// Limiter's keys offered (see stateHint.own) while the keys hold them:
	// a sweep, which would free nothing of theirs, does not walk them. A
	// key is in one at most (see lookup).
	keys, pinned map[string]*gcraState
	nextSweep    atomic.Int64 // written under mu
	// lastDrop is the latest time a key's state was dropped at, or
	// math.MinInt64: a turn asked with an older reading of the clock
	// arrives after a state that may have held turns at its time is gone
	// (see take).
	lastDrop int64
}

// gcraState is one key's state, its times in nanoseconds on the store's
// clock (see MemoryLimitStore.clock): integers, which cost a fraction of
// time.Time's arithmetic. A bucket is full when its time is not after now;
// each token taken moves the time on by the bucket's interval, and the
// bucket refuses what would move it past now plus its burst.
//
// The times are atomic: the Limiter whose own store this is takes its
// turns and corrects its tokens without the store's mu (see takeAt), so
// the buckets move by compare-and-swap. paused and fleet change under mu.
type gcraState struct {
	// The theoretical arrival times, which every turn writes: first, so
	// that the state a Limiter's key offers (see stateHint) has them on
	// the line the key's turns write anyway; apart from what a turn only
	// reads (see cacheLine).
	reqs, toks atomic.Int64
	_          [cacheLine]byte

	paused  atomic.Int64 // Take refuses until then
	dropped atomic.Bool  // swept: no longer the key's state
	fleet   *fleetRate   // the adaptive rate (limitfleet.go); nil: none yet
}

// stateHint is where a caller keeps a key's state between calls, to spare
// the store looking it up (see state), and own, a state of the caller's
// that the store may make the key's, once: a Limiter's key offers one on
// the cache line its turns write.
type stateHint struct {
	atomic.Pointer[gcraState]
	own *gcraState // nil once taken; guarded by the store's mu
}

// newState returns the state of a key the store does not hold: full
// buckets, no pause.
func newState() *gcraState { return new(gcraState).init() }

// init makes st a new key's state (see newState).
func (st *gcraState) init() *gcraState {
	st.reqs.Store(math.MinInt64)
	st.toks.Store(math.MinInt64)
	st.paused.Store(math.MinInt64)
	return st
}

// state returns key's state, or nil when the store holds none. hint, when
// not nil, is where the caller keeps the key's state between calls, to
// spare looking it up: it is used while the store still holds that state,
// and updated. s.mu is held.
func (s *MemoryLimitStore) state(key string, hint *stateHint) *gcraState {
	if hint == nil {
		return s.lookup(key)
	}
	if st := hint.Load(); st != nil && !st.dropped.Load() {
		return st
	}
	st := s.lookup(key)
	hint.Store(st)
	return st
}

// lookup returns key's state, or nil when the store holds none: in keys,
// or else in pinned. s.mu is held.
func (s *MemoryLimitStore) lookup(key string) *gcraState {
	if st := s.keys[key]; st != nil {
		return st
	}
	return s.pinned[key]
}

// add returns a new state for key, which the store holds none of, kept in
// hint too when not nil: the hint's own, pinned, if not taken yet. s.mu
// is held.
func (s *MemoryLimitStore) add(key string, hint *stateHint) *gcraState {
	var st *gcraState
	if hint != nil && hint.own != nil {
		st, hint.own = hint.own.init(), nil
		s.pinned[key] = st
	} else {
		st = newState()
		s.keys[key] = st
	}
	if hint != nil {
		hint.Store(st)
	}
	return st
}

// unpin lets the store drop own, the state hint offered for key, which the
// Limiter no longer holds: dropped at once if run out, as a sweep would,
// else kept where sweeps walk. It withdraws the offer if not taken yet: a
// request that found the key just before may still ask for it.
func (s *MemoryLimitStore) unpin(key string, hint *stateHint, own *gcraState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hint.own = nil
	if s.pinned[key] != own {
		return // never taken
	}
	delete(s.pinned, key)
	if now := s.clock(); own.drop(now) {
		s.lastDrop = max(s.lastDrop, now)
	} else {
		s.keys[key] = own
	}
}

// memorySweepEvery is how often a MemoryLimitStore drops the keys whose
// state has run out.
const memorySweepEvery = time.Second

// NewMemoryLimitStore returns an empty MemoryLimitStore.
func NewMemoryLimitStore() *MemoryLimitStore { return newMemoryLimitStore(readClock) }

// newMemoryLimitStore returns a store on the clock now (tests pass a fake).
func newMemoryLimitStore(now func() time.Time) *MemoryLimitStore {
	s := &MemoryLimitStore{now: now, keys: make(map[string]*gcraState), pinned: make(map[string]*gcraState), lastDrop: math.MinInt64}
	s.nextSweep.Store(math.MinInt64)
	return s
}

// clock reads the store's clock. s.mu is held.
func (s *MemoryLimitStore) clock() int64 { return s.since(s.now()) }

// since returns t in nanoseconds since s.base, the first reading of the
// clock: on the monotonic clock when both have a reading of it, as
// time.Time.Sub does. s.mu is held, unless s.started.
func (s *MemoryLimitStore) since(t time.Time) int64 {
	if !s.started.Load() {
		s.base = t
		s.started.Store(true)
	}
	return s.elapsed(t)
}

// elapsed is since(t) for a store whose base is set: nanoseconds since
// base, without since's check.
func (s *MemoryLimitStore) elapsed(t time.Time) int64 { return int64(t.Sub(s.base)) }

// Take implements LimitStore.
func (s *MemoryLimitStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	wait, by, _, err := s.TakeTurn(ctx, key, reqs, toks, n)
	return wait, by, err
}

// TakeTurn implements TurnLimitStore.
func (s *MemoryLimitStore) TakeTurn(_ context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Counted for AdaptiveLimitStore's accepted rate. The Limiter's own
	// store, asked through takeAt, adapts in the Limiter instead.
	rb, tb := reqs.bucket(), toks.bucket()
	wait, by, end, err := s.take(s.now(), key, nil, &rb, &tb, n, true)
	if n == 0 || tb.every == 0 {
		end = noEnd // no tokens taken
	}
	return wait, by, end, err
}

// takeTurnAhead is AheadLimitStore's TakeTurnAhead, for tests of stores
// across a network. It is not exported: a store that embeds a
// MemoryLimitStore to wrap its TakeTurn would have the Limiter ask
// around it. The buckets are asked with
// their span lengthened by ahead, which lets gcra take a turn due within
// ahead; its wait is then the time until the bucket's turn, as the span
// in force puts it.
func (s *MemoryLimitStore) takeTurnAhead(_ context.Context, key string, reqs, toks BucketLimit, n int64, ahead time.Duration) (time.Duration, ThrottleReason, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rb, tb := reqs.bucket(), toks.bucket()
	ahead = min(max(ahead, 0), maxSpan)
	ra, ta := rb, tb
	if ra.every > 0 {
		ra.span = min(ra.span+ahead, maxSpan)
	}
	if ta.every > 0 {
		ta.span = min(ta.span+ahead, maxSpan)
	}
	at := s.now()
	wait, by, end, err := s.take(at, key, nil, &ra, &ta, n, true)
	switch {
	case err != nil:
		return 0, "", noEnd, err
	case wait > 0:
		if by != ThrottlePaused {
			wait = min(wait+ahead, maxSpan) // until its time, not ahead of it
		}
		return wait, by, noEnd, nil
	}
	now := s.elapsed(at)
	if st := s.lookup(key); st != nil && rb.every > 0 {
		// The turn just taken is the bucket's latest: reqs has moved on
		// from it by one interval.
		wait = max(wait, time.Duration(nsSub(nsSub(st.reqs.Load(), int64(rb.span)), now)))
	}
	if n == 0 || tb.every == 0 {
		end = noEnd // no tokens taken
	} else {
		wait = max(wait, time.Duration(nsSub(nsSub(end, int64(tb.span)), now)))
	}
	return wait, "", end, nil
}

// takeAt is Take at at, a reading of the store's clock made a moment
// before by the caller: the Limiter whose own store s is, on its clock.
// hint is as for state. A key whose state the hint holds takes its turn
// without s.mu, unless a sweep is due. A turn taken also returns end: the
// time, as s.elapsed reads it, until which the bucket owes the tokens
// taken, for a credit of some of them later (see adjust).
func (s *MemoryLimitStore) takeAt(at time.Time, key string, hint *stateHint, reqs, toks *bucket, n int64) (time.Duration, ThrottleReason, int64, error) {
	if st := hint.Load(); st != nil && s.started.Load() && n >= 0 && n <= toks.Burst {
		if now := s.elapsed(at); now < s.nextSweep.Load() {
			wait, by, end := st.take(now, reqs, toks, n)
			if s.kept(key, st) {
				return wait, by, end, nil
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.take(at, key, hint, reqs, toks, n, false)
}

// kept reports whether st, just written without s.mu, is still key's
// state, so that what was written counts. A sweep marks a state dropped
// before it looks at its times, so that either it sees the write and
// keeps the state, or the writer sees the mark and asks here, under s.mu,
// once the sweep is over.
func (s *MemoryLimitStore) kept(key string, st *gcraState) bool {
	return !st.dropped.Load() || s.keptSwept(key, st)
}

// keptSwept is kept for a state a sweep marked: a call of its own, so that
// kept's common answer is inlined.
func (s *MemoryLimitStore) keptSwept(key string, st *gcraState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookup(key) == st
}

// take is Take at at; count counts the request in the key's adaptive
// rate (limitfleet.go) when admitted. It returns takeAt's end too. s.mu is
// held.
func (s *MemoryLimitStore) take(at time.Time, key string, hint *stateHint, reqs, toks *bucket, n int64, count bool) (time.Duration, ThrottleReason, int64, error) {
	if toks.Rate <= 0 {
		n = 0
	}
	if n < 0 || n > toks.Burst {
		return 0, "", noEnd, fmt.Errorf("httpguard: limit store: key %q: %d tokens asked of a bucket of %d", key, n, toks.Burst)
	}
	now := s.since(at)
	s.sweepIfDue(now)
	st := s.state(key, hint)
	if st == nil {
		// A key dropped after the caller read the clock may have held
		// turns at that reading: its new state, full, is full from the
		// drop on, the earliest this turn can have arrived, and not
		// before, which would leave a turn to spare at the drop.
		now = max(now, s.lastDrop)
		if _, wait := gcra(math.MinInt64, now, reqs, 1); wait > 0 {
			return wait, ThrottleRequests, noEnd, nil
		}
		if reqs.every == 0 && (toks.every == 0 || n == 0) {
			return 0, "", noEnd, nil // nothing to take: the key stays without state
		}
		st = s.add(key, hint)
	}
	wait, by, end := st.take(now, reqs, toks, n)
	if wait == 0 && count && reqs.every > 0 {
		st.fleetAt(now).count(now, false)
	}
	return wait, by, end, nil
}

// noEnd is the end of a turn that took no tokens, or of none taken.
const noEnd = NoTurnEnd

// take takes one request, limited by reqs, and n tokens, limited by toks,
// from st at now, both or neither (see LimitStore.Take). A bucket without
// a rate has no interval: gcra takes nothing from it, whatever n. A turn
// taken returns the time until which the tokens bucket owes its tokens.
func (st *gcraState) take(now int64, reqs, toks *bucket, n int64) (time.Duration, ThrottleReason, int64) {
	for {
		if paused := st.paused.Load(); now < paused {
			return time.Duration(nsSub(paused, now)), ThrottlePaused, noEnd
		}
		reqOld, tokOld := st.reqs.Load(), st.toks.Load()
		reqTAT, reqWait := gcra(reqOld, now, reqs, 1)
		tokTAT, tokWait := gcra(tokOld, now, toks, n)
		switch {
		case reqWait >= tokWait && reqWait > 0:
			return reqWait, ThrottleRequests, noEnd
		case tokWait > 0:
			return tokWait, ThrottleTokens, noEnd
		}
		if tokTAT != tokOld && !st.toks.CompareAndSwap(tokOld, tokTAT) {
			continue // tokens corrected meanwhile
		}
		if reqTAT == reqOld || st.reqs.CompareAndSwap(reqOld, reqTAT) {
			return 0, "", tokTAT
		}
		// Another turn taken meanwhile: the tokens go back, and the turn
		// is asked again.
		st.adjust(now, toks, -n)
	}
}

// gcra returns the time a bucket limited by lim moves to when n tokens are
// taken from it at now, its time being tat, and how long the bucket must
// refill first (0: at once).
//
// A bucket full for less than one interval keeps its time: a request
// woken a moment late by its timer then takes the turn it was given, as
// with x/time/rate's reservations, instead of pushing every later turn back
// by its lateness (with a Burst of 1, a queue would run several percent
// slow). A bucket full for longer starts from now.
func gcra(tat, now int64, lim *bucket, n int64) (int64, time.Duration) {
	t := lim.every
	if t == 0 || n == 0 {
		return tat, 0
	}
	if tat <= nsSub(now, int64(t)) {
		tat = now
	}
	next := nsAdd(tat, int64(times(n, t)))
	if allowAt := nsSub(next, int64(lim.span)); allowAt > now {
		return tat, time.Duration(nsSub(allowAt, now))
	}
	return next, 0
}

// Pause implements LimitStore.
func (s *MemoryLimitStore) Pause(_ context.Context, key string, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	until := nsAdd(s.clock(), int64(d))
	st := s.lookup(key)
	if st == nil {
		st = s.add(key, nil)
	}
	st.paused.Store(max(st.paused.Load(), until))
	return nil
}

// Adjust implements LimitStore.
func (s *MemoryLimitStore) Adjust(_ context.Context, key string, toks BucketLimit, n int64) error {
	b := toks.bucket()
	s.adjust(key, nil, &b, n, noEnd, noEnd)
	return nil
}

// CreditTurn implements TurnLimitStore: end is the time, as s.elapsed
// reads it, that TakeTurn returned (see adjust).
func (s *MemoryLimitStore) CreditTurn(_ context.Context, key string, toks BucketLimit, end, n int64) error {
	if n <= 0 {
		return nil
	}
	b := toks.bucket()
	s.adjust(key, nil, &b, -n, end, noEnd)
	return nil
}

// adjust is Adjust; hint is as for state. A key whose state the hint
// holds is corrected without s.mu. at, unless noEnd, is a reading of s's
// clock the correction is made as of; noEnd reads the clock. end, unless
// noEnd, is the end takeAt (or TakeTurn) returned for the turn whose tokens are
// corrected: a credit (n < 0) then gives back only what the bucket still
// owed of them at at, the tokens it would have refilled by end, had the
// turn taken n fewer. Tokens it had refilled by then may have been taken
// again by a later turn, which stacked its own after them: giving them
// back would hand that turn's tokens back (as when the bucket stood full
// during a long answer, and another turn took it whole).
//
// The Limiter makes a credit as of the last turn taken, or debt added, on
// the key's tokens (see tokenCorrection.reportUsage), which spares a
// reading of the clock: the credit is then what it would have been had
// the usage come in at that turn, and nothing stacked on the bucket since.
// As of a time before now, it fills the bucket at most to Burst, as of
// that time (see gcraState.adjust), which now finds full no fuller.
func (s *MemoryLimitStore) adjust(key string, hint *stateHint, toks *bucket, n, end, at int64) {
	if toks.every == 0 || n == 0 {
		return
	}
	if hint != nil && s.started.Load() {
		if st := hint.Load(); st != nil {
			now := at
			if now == noEnd {
				now = s.elapsed(s.now())
			}
			if n = owed(n, end, now, toks); n == 0 {
				return
			}
			st.adjust(now, toks, n)
			if s.kept(key, st) {
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	if n = owed(n, end, now, toks); n == 0 {
		return
	}
	st := s.state(key, hint)
	if st == nil {
		st = s.add(key, hint)
	}
	st.adjust(now, toks, n)
}

// owed bounds a credit n (n < 0) of tokens the bucket owes until end to
// what it still owes at now, in whole tokens. A debit, or a credit of no
// known end, is n.
func owed(n, end, now int64, toks *bucket) int64 {
	if n >= 0 || end == noEnd {
		return n
	}
	left := nsSub(end, now)
	if left <= 0 {
		return 0
	}
	return max(n, -(left / int64(toks.every)))
}

// adjust corrects st's tokens bucket at now (see LimitStore.Adjust).
func (st *gcraState) adjust(now int64, toks *bucket, n int64) {
	t := toks.every
	if t == 0 || n == 0 {
		return
	}
	burst := int64(toks.span)
	for {
		old := st.toks.Load()
		tat := max(old, now)
		if n > 0 {
			// Debt: at most one burst, and never less than before (a
			// smaller burst than the debt's takes nothing, and gives
			// nothing back).
			tat = max(tat, min(nsAdd(tat, int64(times(n, t))), nsAdd(nsAdd(now, burst), burst)))
		} else {
			// Credit: the bucket holds Burst at most. -MinInt64 is itself.
			tat = max(nsSub(tat, int64(times(-max(n, -math.MaxInt64), t))), now)
		}
		if st.toks.CompareAndSwap(old, tat) {
			return
		}
	}
}

// Len returns the number of keys whose state the store holds, after
// dropping those whose state has run out, but for the states a Limiter's
// keys hold (pinned), which stay until the Limiter sweeps the keys.
func (s *MemoryLimitStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.clock())
	return len(s.keys) + len(s.pinned)
}

// sweepIfDue drops run-out keys at most every memorySweepEvery: work in
// the keys not pinned, amortised over the calls in between, and no
// goroutine. s.mu is held.
func (s *MemoryLimitStore) sweepIfDue(now int64) {
	if now < s.nextSweep.Load() {
		return
	}
	s.sweep(now)
	s.nextSweep.Store(nsAdd(now, int64(memorySweepEvery)))
}

// sweep drops the keys whose state has run out, of those not pinned.
// s.mu is held.
func (s *MemoryLimitStore) sweep(now int64) {
	for k, st := range s.keys {
		if st.drop(now) {
			delete(s.keys, k)
			s.lastDrop = max(s.lastDrop, now)
		}
	}
}

// drop reports whether st has run out at now, its buckets full, its pause
// over and no adaptive rate held, and marks it dropped if so. The mark is
// set before its times are read (see kept). The store's mu is held.
func (st *gcraState) drop(now int64) bool {
	st.dropped.Store(true)
	if st.reqs.Load() <= now && st.toks.Load() <= now && st.paused.Load() <= now && !st.fleet.held(now) {
		return true
	}
	st.dropped.Store(false)
	return false
}

// nsAdd returns a+b and nsSub a−b, saturated at the int64 limits as
// time.Time.Sub saturates: the store's times cannot wrap around.
func nsAdd(a, b int64) int64 {
	c := a + b
	if (c > a) == (b > 0) || b == 0 {
		return c
	}
	if b > 0 {
		return math.MaxInt64
	}
	return math.MinInt64
}

func nsSub(a, b int64) int64 {
	c := a - b
	if (c < a) == (b > 0) || b == 0 {
		return c
	}
	if b > 0 {
		return math.MinInt64
	}
	return math.MaxInt64
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
