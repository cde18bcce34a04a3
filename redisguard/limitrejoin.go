package redisguard

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
)

// How a LimitStore that failed open goes back to Redis. The stores of a
// fleet come back one after the other, each on its own probe (and a
// client may wait a second before it dials a server that refused it
// again): a store back on Redis alone would take the fleet's whole rate
// there, and the fresh burst of a Redis that restarted empty, while the
// others still send on their local shares. So a store back on Redis takes
// from its local share as well, until every store counted before the
// outage has counted itself in since Redis last failed this one (its last
// failed probe: a store counted in before, while Redis flapped, may have
// lost it again since), or until the presence
// horizon (3·presenceEvery) has passed: a store not seen by then no longer
// counts. Meanwhile the fleet sends at most the sum of its shares, and
// Redis sees every request of the stores that are back.

// rejoin is a LimitStore's way back to Redis. Its fields are atomic: Take
// reads them on every call.
type rejoin struct {
	on     atomic.Bool
	expect atomic.Int64 // the stores counted before the outage
	// Times on the monotonic clock (ns since epoch, see sinceEpoch): a
	// step of the wall clock neither ends the rejoin early nor makes it
	// last as long as the step.
	lostAt atomic.Int64 // when Redis last failed the store
	until  atomic.Int64 // when it stops waiting for the others
	next   atomic.Int64 // when to count the stores back again
}

// startRejoin decides, as the store goes back to Redis, whether it takes
// from its local share too: when some of the expect stores it counted
// before the outage have not counted in since lostAt (back is those that
// have). s.mu is held: it runs just before the link is up.
func (s *LimitStore) startRejoin(expect, back int64, lostAt time.Time) {
	r := &s.rejoin
	if s.local == nil || back >= expect {
		r.on.Store(false)
		return
	}
	now := sinceEpoch()
	r.expect.Store(expect)
	r.lostAt.Store(int64(lostAt.Sub(epoch))) // lostAt has a monotonic reading: the link's now is time.Now
	r.until.Store(now + int64(3*s.every))
	r.next.Store(now + int64(s.cfg.ProbeInterval))
	r.on.Store(true)
}

// takeRejoining is Take while the store waits for the others to come
// back: the local share first, then Redis. A request the share admits and
// Redis refuses stays taken from the share: the store may admit a little
// less meanwhile, never more.
func (s *LimitStore) takeRejoining(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64, error) {
	if err := s.countBack(ctx); err != nil {
		return 0, "", httpguard.NoTurnEnd, err
	}
	if !s.rejoin.on.Load() {
		return s.takeShared(ctx, key, reqs, toks, n, ahead)
	}
	if wait, by, err := s.takeShare(ctx, key, reqs, toks, n); err != nil || wait > 0 {
		return wait, by, httpguard.NoTurnEnd, err
	}
	wait, by, end, err := s.takeShared(ctx, key, reqs, toks, n, ahead)
	return wait, by, shareTookToo(end), err
}

// A turn's end (see TakeTurn) tells, in its lowest bit, whether the local
// share took the turn too, as it does while the store rejoins: 1 if it
// did. The bit is set or cleared by moving the end back a nanosecond at
// most (takeScript's end is a float of seconds since 2017, exact to tens
// of nanoseconds): the credit it bounds may give back less, never more.
// So a credit that comes while the store rejoins gives the share back only
// a turn the share took, not one Redis alone took before the outage.

// redisOnly marks end as the end of a turn Redis alone took.
func redisOnly(end int64) int64 {
	if end == httpguard.NoTurnEnd {
		return end
	}
	return end &^ 1
}

// shareTookToo marks end as the end of a turn the local share took too.
func shareTookToo(end int64) int64 {
	if end == httpguard.NoTurnEnd || end&1 == 1 {
		return end
	}
	return end - 1
}

// tookByShare reports whether end is the end of a turn the local share
// took too.
func tookByShare(end int64) bool { return end != httpguard.NoTurnEnd && end&1 == 1 }

// countBack counts, once every ProbeInterval, the stores that came back
// since this one lost Redis, and ends the rejoin when all it expects are
// back or the presence horizon has passed.
func (s *LimitStore) countBack(ctx context.Context) error {
	r := &s.rejoin
	now := sinceEpoch()
	if now >= r.until.Load() {
		r.on.Store(false)
		return nil
	}
	next := r.next.Load()
	if now < next || !r.next.CompareAndSwap(next, now+int64(s.cfg.ProbeInterval)) {
		return nil
	}
	n, back, err := s.count(ctx, s.call, time.Duration(now-r.lostAt.Load()))
	if err != nil {
		return err
	}
	s.replicas.Store(n)
	if back >= r.expect.Load() {
		r.on.Store(false)
	}
	return nil
}
