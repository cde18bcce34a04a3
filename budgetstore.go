package httpguard

import (
	"context"
	"sync"
	"time"
)

// BudgetStore keeps a Budget's money per window: the money settled (spent)
// and the reservations held by attempts in flight. The in-memory store
// (NewMemoryBudgetStore) serves one process; a shared store (Redis, in the
// redisguard module) caps a fleet. Implementations must be safe for
// concurrent use and make each method atomic. The conformance suite in
// package httpguardtest/storetest checks any implementation.
//
// Windows are opaque keys ("day:2026-11-25", "lifetime", ...) ordered by
// their Start. Once a store has seen a reservation in a window, it never
// again admits money into an older one: a reservation for an older window
// goes to the newest window instead, and its result says so. That is how a
// window's spend is never forgotten while a request that read the clock in
// it can still reach the store: the store may drop an old window's totals,
// since nothing is admitted there any more. A store shared by processes
// whose clocks may disagree may also keep a reservation for a newer window
// in the newest one until the newer window has started on the store's own
// clock, so that one process whose clock runs ahead does not open the next
// window for all of them early.
//
// An error from Reserve or Totals refuses the request (a Budget fails
// closed); an error from Settle or Renew is logged to BudgetConfig.Logger.
type BudgetStore interface {
	// Reserve holds r.Amount in r.Window (or the newest window, when it is
	// newer, or when r.Window has not started on a shared store's clock)
	// if the window's settled money, plus the amounts held there, plus
	// r.Amount stays within limit; otherwise it holds nothing. Holds whose
	// lease has ended count as released.
	Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error)
	// Settle ends the reservation id held in window: it releases the hold
	// and adds actual to the window's settled money, and returns the
	// window's new settled total. A reservation whose lease already ended
	// (or an unknown id) only adds actual.
	Settle(ctx context.Context, window string, id uint64, actual Money) (settled Money, err error)
	// Renew moves the end of the leases of reservations ids, held in
	// window, to lease from now. Unknown or expired ids are skipped.
	Renew(ctx context.Context, window string, ids []uint64, lease time.Duration) error
	// Totals returns window's settled money and the money held there by
	// live reservations. A window the store does not know has zero totals.
	Totals(ctx context.Context, window string) (settled, held Money, err error)
}

// A BudgetWatcher is a BudgetStore shared by several processes that can
// tell a waiting Budget when money may have been released by another one,
// so that the Budget does not have to wait for its next poll. A Budget
// waiting for room calls Watch once and stops watching by cancelling ctx.
// The channel receives (it may be buffered and coalesce) after money in
// window is settled or released by anyone; it is never closed. Budgets
// still poll the store, as a floor, in case a notice is lost.
type BudgetWatcher interface {
	Watch(ctx context.Context, window string) <-chan struct{}
}

// A Reservation asks a BudgetStore to hold money for one attempt. It is a
// plain value.
type Reservation struct {
	// ID names the reservation in later calls. A Budget draws a random base
	// when it is made and counts from it, so that IDs do not collide
	// across the processes sharing a store.
	ID uint64
	// Window is the window's key; Start and End are its time range. A zero
	// End means the window never ends.
	Window     string
	Start, End time.Time
	// Amount is the money to hold, at least zero.
	Amount Money
	// Lease is how long the hold lasts unless renewed or settled, so that
	// the reservations of a process that died are released. Zero means the
	// hold lasts until it is settled.
	Lease time.Duration
}

// ReserveResult is the answer to BudgetStore.Reserve. It is a plain value.
type ReserveResult struct {
	// OK reports whether the money is held.
	OK bool
	// Window is the window the money is held in, or would have been: the
	// reservation's, or a newer one the store has already moved to. Settle
	// and Renew name it.
	Window string
	// Settled and Held are the window's totals after the call.
	Settled, Held Money
	// FreeIn, when OK is false and reservations are held, is how long until
	// the first of their leases ends, which may free room (zero when none
	// has a lease). Settlements may free room sooner.
	FreeIn time.Duration
}

// MemoryBudgetStore is the BudgetStore a Budget uses when BudgetConfig.Store
// is nil: its totals live in this process. It keeps only the windows it
// may still admit money into, and those with reservations held. Make one
// with NewMemoryBudgetStore; the zero value is not usable. It is safe for
// concurrent use by multiple goroutines.
type MemoryBudgetStore struct {
	now func() time.Time

	mu          sync.Mutex
	windows     map[string]*memWindow
	newest      string
	newestStart time.Time
	// newestWindow is windows[newest] once looked up (nil before): every
	// Reserve and most Settles are in it, and it is never dropped.
	newestWindow *memWindow
}

// memWindow is one window's money. holds maps reservation IDs to what they
// hold; leased counts those with a lease, and nextExpiry is the earliest
// lease end among them (valid while leased > 0).
type memWindow struct {
	settled, held Money
	holds         map[uint64]memHold
	leased        int
	nextExpiry    time.Time
}

type memHold struct {
	amount  Money
	expires time.Time // zero: no lease
}

// NewMemoryBudgetStore returns an empty in-memory store.
func NewMemoryBudgetStore() *MemoryBudgetStore { return newMemoryBudgetStore(time.Now) }

func newMemoryBudgetStore(now func() time.Time) *MemoryBudgetStore {
	return &MemoryBudgetStore{now: now, windows: make(map[string]*memWindow)}
}

// Reserve implements BudgetStore.
func (s *MemoryBudgetStore) Reserve(_ context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.admitting(r.Window, r.Start)
	key := s.newest
	var now time.Time
	if r.Lease > 0 || w.leased > 0 { // the clock matters only to leases
		now = s.now()
		w.expire(now)
	}
	res := ReserveResult{Window: key}
	// settled saturates at 2·MaxBudgetLimit and held stays within limit,
	// at most MaxBudgetLimit; Amount, which may be anything, is compared
	// by subtraction: no overflow.
	if r.Amount >= 0 && r.Amount <= limit && w.settled+w.held <= limit-r.Amount {
		w.hold(r, now)
		res.OK = true
	} else if w.leased > 0 {
		res.FreeIn = max(w.nextExpiry.Sub(now), 0)
	}
	res.Settled, res.Held = w.settled, w.held
	return res, nil
}

// admitting returns the window money is admitted into for a reservation in
// key, starting at start: key, or the newest window when that is newer.
// Moving to a newer window drops the older ones that hold nothing.
func (s *MemoryBudgetStore) admitting(key string, start time.Time) *memWindow {
	if s.newest == "" || start.After(s.newestStart) {
		s.newest, s.newestStart, s.newestWindow = key, start, nil
		for k, w := range s.windows {
			if k != key && len(w.holds) == 0 {
				delete(s.windows, k)
			}
		}
	}
	if s.newestWindow != nil {
		return s.newestWindow
	}
	w := s.windows[s.newest]
	if w == nil {
		w = &memWindow{holds: make(map[uint64]memHold)}
		s.windows[s.newest] = w
	}
	s.newestWindow = w
	return w
}

func (w *memWindow) hold(r Reservation, now time.Time) {
	h := memHold{amount: r.Amount}
	if r.Lease > 0 {
		h.expires = now.Add(r.Lease)
		if w.leased == 0 || h.expires.Before(w.nextExpiry) {
			w.nextExpiry = h.expires
		}
		w.leased++
	}
	if old, ok := w.holds[r.ID]; ok { // an ID used twice: the new hold replaces the old
		w.release(r.ID, old)
	}
	w.holds[r.ID] = h
	w.held += h.amount
}

func (w *memWindow) release(id uint64, h memHold) {
	delete(w.holds, id)
	w.held -= h.amount
	if !h.expires.IsZero() {
		w.leased--
	}
}

// expire releases the holds whose lease ended by now.
func (w *memWindow) expire(now time.Time) {
	if w.leased == 0 || now.Before(w.nextExpiry) {
		return
	}
	var next time.Time
	for id, h := range w.holds {
		switch {
		case h.expires.IsZero():
		case !now.Before(h.expires):
			w.release(id, h)
		case next.IsZero() || h.expires.Before(next):
			next = h.expires
		}
	}
	w.nextExpiry = next
}

// Settle implements BudgetStore.
func (s *MemoryBudgetStore) Settle(_ context.Context, window string, id uint64, actual Money) (Money, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.newestWindow
	if w == nil || window != s.newest {
		w = s.windows[window]
	}
	if w == nil {
		// Dropped: an old window nothing is admitted into any more. Its
		// settled money can no longer change what is admitted.
		w = &memWindow{holds: make(map[uint64]memHold)}
		if window == s.newest {
			s.windows[window], s.newestWindow = w, w
		}
	}
	if w.leased > 0 {
		w.expire(s.now())
	}
	if h, ok := w.holds[id]; ok {
		w.release(id, h)
	}
	w.settled = min(w.settled+min(max(actual, 0), 2*MaxBudgetLimit), 2*MaxBudgetLimit)
	settled := w.settled
	if window != s.newest && len(w.holds) == 0 {
		delete(s.windows, window)
	}
	return settled, nil
}

// Renew implements BudgetStore.
func (s *MemoryBudgetStore) Renew(_ context.Context, window string, ids []uint64, lease time.Duration) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[window]
	if w == nil {
		return nil
	}
	w.expire(now)
	for _, id := range ids {
		h, ok := w.holds[id]
		if !ok || h.expires.IsZero() || lease <= 0 {
			continue
		}
		h.expires = now.Add(lease)
		w.holds[id] = h
	}
	// Recompute the earliest expiry: renewals only move leases later.
	w.nextExpiry = time.Time{}
	for _, h := range w.holds {
		if !h.expires.IsZero() && (w.nextExpiry.IsZero() || h.expires.Before(w.nextExpiry)) {
			w.nextExpiry = h.expires
		}
	}
	return nil
}

// Totals implements BudgetStore.
func (s *MemoryBudgetStore) Totals(_ context.Context, window string) (settled, held Money, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[window]
	if w == nil {
		return 0, 0, nil
	}
	if w.leased > 0 {
		w.expire(s.now())
	}
	return w.settled, w.held, nil
}
