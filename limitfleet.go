package httpguard

import (
	"context"
	"fmt"
	"math"
	"time"
)

// This file is the adaptive request rate a fleet shares: a LimitStore that
// also implements AdaptiveLimitStore keeps, per key, the last decrease of
// the rate and what the fleet sent and had refused, so that one 429 cuts the
// rate of the bucket the fleet shares once per round, from what the whole
// fleet was accepted at, and every Limiter recovers along the same curve.

// AdaptiveRate is a key's adaptive request rate as an AdaptiveLimitStore
// keeps it for the fleet. The zero AdaptiveRate means no decrease: the
// key's rate is the configured one.
type AdaptiveRate struct {
	// Decreases counts the decreases the store recorded for the key; a
	// Limiter adopts a decrease when the count differs from the last it
	// saw.
	Decreases uint64
	// From is the rate the last decrease cut from, in requests per second:
	// CUBIC's Wmax, to which the rate grows back. A From that is not a
	// finite number >= 0 is a store error to the Limiter, which keeps its
	// rate.
	From float64
	// Since is how long ago the last decrease was, on the store's clock.
	Since time.Duration
}

// An AdaptiveLimitStore is a LimitStore that also keeps each key's
// adaptive request rate (see AdaptiveConfig) for all the Limiters sharing
// it. Without it, each Limiter adapts on its own and passes its rate to the
// shared bucket. With it, the fleet's 429s are judged together (a
// degraded provider's few 429s, a small share of all the fleet's requests,
// cut nothing, where one replica's unlucky second would), a 429 beyond
// that share cuts the fleet's rate once per round, from the rate at which
// the fleet's requests were accepted, and every Limiter runs the shared
// bucket at the rate that decrease sets. MemoryLimitStore implements it,
// and so does redisguard's LimitStore.
//
// Implementations must be safe for concurrent use and make each call atomic
// per key; a store counts the requests its Take admits for each key.
type AdaptiveLimitStore interface {
	LimitStore
	// AdaptiveRate returns key's adaptive rate. A store across a network
	// may answer with what its last Take for key read.
	AdaptiveRate(ctx context.Context, key string) (AdaptiveRate, error)
	// SlowDown counts a 429 to a request of key sent sentAgo ago, and
	// reports whether the key's 429s are beyond tolerated: more than
	// tolerated (a share, from 0 to 1) of the requests the store admitted
	// for key over the last second. When they are, and no decrease was
	// recorded since the request was sent, it records one now, from rate
	// or from the rate the store's requests for key were accepted at over
	// the last second (admitted less refused), the lower. A decrease on
	// 429s fewer than twice tolerated of the requests, with no other
	// decrease over the half second before it, forgets them (they may be a
	// degraded provider's faults, beyond the share by chance): the next
	// decrease needs a share beyond of its own. It returns the
	// key's adaptive rate after. A rate that is not a finite number >= 0,
	// or a tolerated share outside [0, 1], is an error, and records
	// nothing.
	SlowDown(ctx context.Context, key string, sentAgo time.Duration, rate, tolerated float64) (ar AdaptiveRate, beyond bool, err error)
}

var _ AdaptiveLimitStore = (*MemoryLimitStore)(nil)

// fleetRate is a key's shared adaptive state in a MemoryLimitStore.
type fleetRate struct {
	born          int64 // when the store began counting the key
	last          int64 // the last request or 429 counted
	sent, refused windowCount
	decreases     uint64
	from          float64
	decreasedAt   int64
}

// fleetRateTTL is how long a MemoryLimitStore keeps a key's last decrease
// once its buckets are full again: long enough for any curve to recover.
const fleetRateTTL = DefaultIdleTTL

// AdaptiveRate implements AdaptiveLimitStore.
func (s *MemoryLimitStore) AdaptiveRate(_ context.Context, key string) (AdaptiveRate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.lookup(key)
	if st == nil || st.fleet == nil {
		return AdaptiveRate{}, nil
	}
	return st.fleet.rate(s.clock()), nil
}

// SlowDown implements AdaptiveLimitStore. A rate that is not one (NaN,
// infinite, below zero) is refused: it would be the key's decrease for the
// round, which no Limiter adopts.
func (s *MemoryLimitStore) SlowDown(_ context.Context, key string, sentAgo time.Duration, rate, tolerated float64) (AdaptiveRate, bool, error) {
	if err := checkSlowDown(rate, tolerated); err != nil {
		return AdaptiveRate{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	st := s.lookup(key)
	if st == nil {
		st = s.add(key, nil)
	}
	f := st.fleetAt(now)
	f.count(now, true)
	age := time.Duration(nsSub(now, f.born))
	sent, refused := f.sent.count(age), f.refused.count(age)
	if refused <= tolerated*sent {
		return f.rate(now), false, nil
	}
	if f.decreases > 0 && nsSub(now, int64(sentAgo)) < f.decreasedAt {
		return f.rate(now), true, nil
	}
	from := rate
	if span := min(nsSub(now, f.born), int64(rateWindow)); span > 0 {
		if accepted := max(sent-refused, 0) / time.Duration(span).Seconds(); accepted > 0 && accepted < from {
			from = accepted
		}
	}
	sinceLast := time.Duration(math.MaxInt64) // no cut before
	if f.decreases > 0 {
		sinceLast = time.Duration(nsSub(now, f.decreasedAt))
	}
	if byChance(refused, sent, tolerated, sinceLast) {
		f.refused.clear()
	}
	f.decreases++
	f.from, f.decreasedAt = from, now
	return f.rate(now), true, nil
}

// checkSlowDown returns an error for SlowDown's arguments when they are
// not a rate and a share: NaN, an infinite rate or one below zero would be
// the key's decrease for the round, which no Limiter adopts.
func checkSlowDown(rate, tolerated float64) error {
	if !(rate >= 0 && rate <= math.MaxFloat64) {
		return fmt.Errorf("httpguard: limit store: SlowDown: rate must be a finite number >= 0, got %v", rate)
	}
	if !(tolerated >= 0 && tolerated <= 1) {
		return fmt.Errorf("httpguard: limit store: SlowDown: tolerated share must be from 0 to 1, got %v", tolerated)
	}
	return nil
}

// fleetAt returns st's adaptive state, made at now if none. The store's mu
// is held.
func (st *gcraState) fleetAt(now int64) *fleetRate {
	if st.fleet == nil {
		st.fleet = &fleetRate{born: now}
	}
	return st.fleet
}

func (f *fleetRate) rate(now int64) AdaptiveRate {
	if f.decreases == 0 {
		return AdaptiveRate{}
	}
	return AdaptiveRate{Decreases: f.decreases, From: f.from, Since: time.Duration(nsSub(now, f.decreasedAt))}
}

// held reports whether f holds what is still worth keeping at now: a
// recent decrease, or requests counted within the window.
func (f *fleetRate) held(now int64) bool {
	if f == nil {
		return false
	}
	return f.decreases > 0 && nsSub(now, f.decreasedAt) < int64(fleetRateTTL) ||
		nsSub(now, f.last) < int64(fleetCountTTL)
}

// fleetCountTTL is how long a MemoryLimitStore keeps counting a key whose
// buckets are full again after its last request or 429: a key that comes
// back later is counted anew, as a new key.
const fleetCountTTL = rateWindow / 2

// count counts a request admitted (refused false) or refused with a 429
// at now.
func (f *fleetRate) count(now int64, refused bool) {
	f.last = now
	age := time.Duration(nsSub(now, f.born))
	if refused {
		f.refused.add(age)
	} else {
		f.sent.add(age)
	}
}
