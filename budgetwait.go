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
// context ends. It holds nothing while it waits.
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
	for {
		// Take the channel before trying, so that a settlement between
		// the try and the wait is not missed.
		settled := b.room.next()
		got, at, err := b.tryReserve(ctx, w.q)
		if err != nil && ctx.Err() != nil {
			// The wait's end cut the store's call short (a round trip to
			// Redis): it ended the wait, as it does between looks.
			return "", w.ended(ctx, res, span)
		}
		if res, span = got, at; err != nil || res.OK {
			return res.Window, err
		}
		if b.cfg.Limit-res.Settled < w.q.reserve {
			return "", b.refuse(w.q, res, span, nil) // nothing in flight can make room
		}
		wake.Reset(w.nextLook(res, span))
		select {
		case <-settled:
		case <-elsewhere:
		case <-wake.C:
		case <-deadline.C:
			// One last look: a shared store may have made room unseen.
			got, at, err := b.tryReserve(ctx, w.q)
			if err != nil && ctx.Err() != nil {
				return "", w.ended(ctx, res, span)
			}
			if res, span = got, at; err != nil || res.OK {
				return res.Window, err
			}
			return "", b.refuse(w.q, res, span, errMaxWait{b.cfg.MaxWait})
		case <-ctx.Done():
			return "", w.ended(ctx, res, span)
		}
		wake.Stop()
	}
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
