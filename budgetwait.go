package httpguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what a Budget does between a reservation and its
// settlement: attempts waiting for room (roomWait, woken by roomSignal), and
// the renewal of the leases of reservations in flight (leaseRenewer).

// roomSignal wakes the attempts waiting for room when money is released.
// waiting counts them, so that a settlement skips the mutex while nobody
// waits.
type roomSignal struct {
	waiting atomic.Int32
	mu      sync.Mutex
	ch      chan struct{} // closed at the next settlement; nil while nobody asked
}

// next returns a channel closed at the next settlement.
func (s *roomSignal) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// signal wakes every waiter.
func (s *roomSignal) signal() {
	if s.waiting.Load() != 0 {
		s.wake()
	}
}

// wake is signal for an attempt that waits: a call of its own, so that
// signal's common case is inlined.
func (s *roomSignal) wake() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

// roomWait is one attempt waiting for room that attempts in flight hold.
// It tries again after each local settlement, when the window ends (a new
// window has room), when the store says a lease may end, and, with a
// shared store, every poll interval; it gives up after MaxWait or when its
// context ends. It holds nothing while it waits. With a shared store, the
// waiters of a Budget share their looks (see share).
type roomWait struct {
	b *Budget
	q *quote
}

func (w roomWait) wait(ctx context.Context, res ReserveResult, span *windowSpan) (string, error) {
	b := w.b
	resume := holdAttemptTimer(ctx) // time queued here is not the server's slowness
	defer resume()
	b.room.waiting.Add(1)
	defer b.room.waiting.Add(-1)
	if b.onWait != nil {
		b.onWait()
	}
	deadline := time.NewTimer(b.cfg.MaxWait)
	defer deadline.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	var elsewhere <-chan struct{} // settlements in other processes, when the store tells
	if bw, ok := b.store.(BudgetWatcher); ok {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		elsewhere = bw.Watch(wctx, res.Window)
	}
	var wakeAt time.Time // when room may free up unseen: the next poll, a lease's end, the window's
	for first := true; ; first = false {
		// Take the channel before trying, so that a settlement between
		// the try and the wait is not missed.
		settled := b.room.next()
		step, look := lookNow, (*roomLook)(nil)
		if b.poll > 0 { // a shared store: each look is a round trip
			var woke time.Time // a look begun since sees what settled before the channel was taken
			if !first {
				woke = time.Now()
			}
			step, look = w.share(ctx, deadline.C, woke)
		}
		switch step {
		case lookEnded:
			return "", w.ended(ctx, res, span)
		case lookMaxWait:
			return w.lastLook(ctx, res, span)
		case lookSkip:
			res, span = look.res, look.span // what a look begun since found
			res.OK = false
			wakeAt = time.Now().Add(w.nextLook(res, span))
		case lookNow:
			got, at, err := b.tryReserve(ctx, w.q)
			look.end(got, at, err)
			if err != nil && ctx.Err() != nil {
				// The wait's end cut the store's call short (a round
				// trip to Redis): it ended the wait, as it does between
				// looks.
				return "", w.ended(ctx, res, span)
			}
			if res, span = got, at; err != nil || res.OK {
				return res.Window, err
			}
			wakeAt = time.Now().Add(w.nextLook(res, span))
		}
		if b.cfg.Limit-res.Settled < w.q.reserve {
			return "", b.refuse(w.q, res, span, nil) // nothing in flight can make room
		}
		wake.Reset(time.Until(wakeAt))
		select {
		case <-settled:
		case <-elsewhere:
		case <-wake.C:
		case <-deadline.C:
			return w.lastLook(ctx, res, span)
		case <-ctx.Done():
			return "", w.ended(ctx, res, span)
		}
		wake.Stop()
	}
}

// What a waiting attempt does next, after share.
const (
	lookNow     = iota // look at the store
	lookSkip           // no look: one begun since the wake found no room for it
	lookMaxWait        // MaxWait passed while another's look was under way
	lookEnded          // the context ended meanwhile
)

// share decides whether an attempt waiting for room in a shared store looks
// at the store after a wake at woke (zero: its first look). A settlement or
// a store's notice wakes every waiter at once, and each waiter's poll comes
// every poll interval; each asking the store whether it fits now made a
// round trip per waiter, for every settlement anywhere in the fleet and
// five times a second. So the waiters of a Budget share their looks: one
// looks, and those woken meanwhile wait for it. When what it found (the
// window's totals, after it) leaves no room for a waiter, the waiter skips
// its look (lookSkip, with that look); as many as that room fits look at
// once, the others waiting for their looks. A look under way when an
// attempt woke may have begun before what woke it: the attempt waits for
// it, and takes the next. On lookNow, the look returned is to be ended
// with what the attempt's own look found.
func (w roomWait) share(ctx context.Context, maxWait <-chan time.Time, woke time.Time) (int, *roomLook) {
	looks := &w.b.looks
	if woke.IsZero() {
		return lookNow, looks.begin()
	}
	for {
		l, mine := looks.join(woke)
		if mine {
			return lookNow, l
		}
		select {
		case <-l.done:
		case <-maxWait:
			return lookMaxWait, nil
		case <-ctx.Done():
			return lookEnded, nil
		}
		if l.began.Before(woke) {
			continue // begun before the wake: the next look
		}
		if !l.failed {
			free := w.b.cfg.Limit - (l.res.Settled + l.res.Held)
			if free < w.q.reserve {
				return lookSkip, l
			}
			if looks.claim(l, w.q.reserve, free) {
				return lookNow, looks.begin()
			}
		}
		woke = l.ended // the room it found is claimed, or it failed: the next look
	}
}

// roomLooks are the looks at a shared store of a Budget's waiting attempts
// (see roomWait.share).
type roomLooks struct {
	mu     sync.Mutex
	latest *roomLook // the look begun last
}

// roomLook is one look at the store: what it found is set, and done
// closed, when it ends.
type roomLook struct {
	began, ended time.Time
	done         chan struct{}
	res          ReserveResult
	span         *windowSpan
	failed       bool
	claimed      Money // of the room it found, by the attempts looking on it (guarded by roomLooks.mu)
}

// begin begins a look.
func (s *roomLooks) begin() *roomLook {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = &roomLook{began: time.Now(), done: make(chan struct{})}
	return s.latest
}

// join returns the latest look when it began at woke or later, or is
// still under way, and otherwise begins one, mine.
func (s *roomLooks) join(woke time.Time) (l *roomLook, mine bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.latest; l != nil && (!l.began.Before(woke) || !l.isDone()) {
		return l, false
	}
	s.latest = &roomLook{began: time.Now(), done: make(chan struct{})}
	return s.latest, true
}

// claim claims need of the room free that l found, and reports whether it
// was left.
func (s *roomLooks) claim(l *roomLook, need, free Money) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if need > free-l.claimed {
		return false
	}
	l.claimed += need
	return true
}

// isDone reports whether l has ended.
func (l *roomLook) isDone() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// end ends l (when not nil) with what it found.
func (l *roomLook) end(res ReserveResult, span *windowSpan, err error) {
	if l != nil {
		l.res, l.span, l.failed, l.ended = res, span, err != nil, time.Now()
		close(l.done)
	}
}

// lastLook ends a wait at MaxWait: one last look, as a shared store may
// have made room unseen, and the refusal when it has not.
func (w roomWait) lastLook(ctx context.Context, res ReserveResult, span *windowSpan) (string, error) {
	got, at, err := w.b.tryReserve(ctx, w.q)
	if err != nil && ctx.Err() != nil {
		return "", w.ended(ctx, res, span)
	}
	if res, span = got, at; err != nil || res.OK {
		return res.Window, err
	}
	return "", w.b.refuse(w.q, res, span, errMaxWait{w.b.cfg.MaxWait})
}

// ended is the error of a wait that its context ended, res and span being
// what its last look at the store found.
func (w roomWait) ended(ctx context.Context, res ReserveResult, span *windowSpan) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The caller gave up, as it may in the Limiter's queue: the
		// budget refused nothing.
		return fmt.Errorf("httpguard: budget: model %q: %w while waiting for room", w.q.chat.Model, context.Cause(ctx))
	}
	return w.b.refuse(w.q, res, span, contextEnd(ctx)) // a caller's WithTimeoutCause kept
}

// nextLook is how long until room may free up without a local settlement
// saying so.
func (w roomWait) nextLook(res ReserveResult, span *windowSpan) time.Duration {
	d := time.Duration(1<<63 - 1)
	if !span.forever {
		d = max(span.end.Sub(w.b.now()), 0)
	}
	if res.FreeIn > 0 {
		d = min(d, res.FreeIn)
	}
	if w.b.poll > 0 {
		d = min(d, w.b.poll)
	}
	return min(d, w.b.cfg.MaxWait)
}

// errMaxWait is why a wait ended when MaxWait passed.
type errMaxWait struct{ d time.Duration }

func (e errMaxWait) Error() string {
	return "after waiting " + e.d.String() + " (MaxWait) for attempts in flight"
}

// leaseRenewer renews the leases of a Budget's reservations in flight, so
// that a shared store keeps them held while this process lives. It runs on
// a timer armed while reservations with a lease are held: no goroutine of
// its own.
type leaseRenewer struct {
	b     *Budget
	mu    sync.Mutex
	held  map[uint64]string // reservation ID → window
	timer *time.Timer
}

func (r *leaseRenewer) add(id uint64, window string) {
	if r.b.cfg.Lease > 0 {
		r.addLeased(id, window)
	}
}

// addLeased is add for a Budget whose reservations are leased: a call of its
// own, so that add's common case, no lease, is inlined.
func (r *leaseRenewer) addLeased(id uint64, window string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = make(map[uint64]string)
	}
	r.held[id] = window
	if r.timer == nil {
		r.timer = time.AfterFunc(r.b.cfg.Lease/3, r.renew)
	}
}

func (r *leaseRenewer) remove(id uint64) {
	if r.b.cfg.Lease > 0 {
		r.removeLeased(id)
	}
}

// removeLeased is remove for a Budget whose reservations are leased (see
// addLeased).
func (r *leaseRenewer) removeLeased(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.held, id)
	if len(r.held) == 0 && r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// renew renews every lease held, window by window, and re-arms the timer
// while any is held.
func (r *leaseRenewer) renew() {
	r.mu.Lock()
	byWindow := make(map[string][]uint64)
	for id, w := range r.held {
		byWindow[w] = append(byWindow[w], id)
	}
	r.mu.Unlock()
	for w, ids := range byWindow {
		ctx, cancel := context.WithTimeout(context.Background(), r.b.cfg.Lease/3)
		if err := r.b.store.Renew(ctx, w, ids, r.b.cfg.Lease); err != nil {
			r.b.log("renew", w, err)
		}
		cancel()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.held) > 0 && r.timer != nil {
		r.timer.Reset(r.b.cfg.Lease / 3)
	} else {
		r.timer = nil
	}
}
