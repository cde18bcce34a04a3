package httpguard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
// A Budget calls Settle once per reservation and stops renewing its lease
// first: a Settle that returns an error must keep the charge and add it
// once it can (redisguard's store does), or the money the provider billed
// is forgotten when the lease ends, and the window may pass its limit.
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
// with NewMemoryBudgetStore; the zero value is not usable (NewBudget
// refuses it, and its methods panic). The Budgets sharing one must have
// the same Window, Period and Location: NewBudget refuses one that does
// not. Like every BudgetStore it never goes back to an older window, so
// one reading of a wall clock far ahead (a year, by an NTP step undone)
// holds it in that future window until the window ends: the Budgets serve
// what is left of one Limit there, then refuse, naming the window's end,
// until the process restarts. It is safe for concurrent use by multiple
// goroutines.
type MemoryBudgetStore struct {
	now func() time.Time

	// calendar names the windows of the Budgets using the store: the
	// first one's (see claim).
	calendar atomic.Pointer[string]

	// newest is the window money is admitted into; it only moves to
	// windows that start later. A Budget's own reservations without a
	// lease reach it without taking mu (see reserveUnleased).
	newest atomic.Pointer[memWindow]

	mu      sync.Mutex
	windows map[string]*memWindow
}

// memWindow is one window's money. Its totals are atomic, so that a
// reservation without a lease is one compare-and-swap: used is settled
// plus held, the sum a reservation is checked against, in one word;
// settled and held are its parts, as Totals reports them. The holds of
// reservations named by ID (those of Reserve) are guarded by the store's
// mu: holds maps their IDs to what they hold; leased counts those with a
// lease, and nextExpiry is the earliest lease end among them (valid while
// leased > 0).
type memWindow struct {
	key   string
	start time.Time

	// The totals, which every reservation writes, apart from what it
	// only reads (see cacheLine).
	_                   [cacheLine]byte
	used, settled, held atomic.Int64

	holds      map[uint64]memHold
	leased     int
	nextExpiry time.Time
}

type memHold struct {
	amount  Money
	expires time.Time // zero: no lease
}

// NewMemoryBudgetStore returns an empty in-memory store.
func NewMemoryBudgetStore() *MemoryBudgetStore { return newMemoryBudgetStore(readClock) }

func newMemoryBudgetStore(now func() time.Time) *MemoryBudgetStore {
	return &MemoryBudgetStore{now: now, windows: make(map[string]*memWindow)}
}

// claim records that a Budget whose windows are named calendar uses s, or
// says why it must not: s holds the windows of Budgets with another
// calendar, and the newest of either's windows would take in the other's
// money (a Monthly Budget sharing a Daily one's store would have a Limit a
// day, and read none of it as spent).
func (s *MemoryBudgetStore) claim(calendar string) error {
	if s.calendar.CompareAndSwap(nil, &calendar) {
		return nil
	}
	if have := *s.calendar.Load(); have != calendar {
		return fmt.Errorf("a Budget with %s uses this MemoryBudgetStore; one with %s needs a store of its own", have, calendar)
	}
	return nil
}

// Reserve implements BudgetStore.
func (s *MemoryBudgetStore) Reserve(_ context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserve(r, limit, true), nil
}

// reserve is Reserve; record keeps the hold by r.ID, for Settle and Renew.
// s.mu is held.
func (s *MemoryBudgetStore) reserve(r Reservation, limit Money, record bool) ReserveResult {
	w := s.admitting(r.Window, r.Start)
	var now time.Time
	if r.Lease > 0 || w.leased > 0 { // the clock matters only to leases
		now = s.now()
		w.expire(now)
	}
	res := ReserveResult{Window: w.key}
	if w.admit(r.Amount, limit) {
		if record {
			w.hold(r, now)
		}
		res.OK = true
	} else if w.leased > 0 {
		res.FreeIn = max(w.nextExpiry.Sub(now), 0)
	}
	res.Settled, res.Held = w.totals()
	return res
}

// reserveUnleased is Reserve for a reservation without a lease whose
// holder settles it once, with settleUnleased, naming what it holds: the
// Budget whose own store s is. The store keeps no record of it, only its
// money in the totals. It takes no lock when the money fits in the newest
// window; a refusal, or a window to open, takes Reserve's path, which
// ends the leases due and says when the next ends.
func (s *MemoryBudgetStore) reserveUnleased(r Reservation, limit Money) ReserveResult {
	w, ok := s.admitNewest(r.Start, r.Amount, limit)
	if ok {
		res := ReserveResult{OK: true, Window: w.key}
		res.Settled, res.Held = w.totals()
		return res
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w != nil {
		s.forgetIfDone(w)
	}
	return s.reserve(r, limit, false)
}

// admitNewest is reserveUnleased's path without a lock: it admits amount,
// for a reservation in a window starting at start, into the newest window
// when that is the reservation's and has room. It returns the newest
// window (nil when none is open yet), and whether it admitted amount there.
func (s *MemoryBudgetStore) admitNewest(start time.Time, amount, limit Money) (*memWindow, bool) {
	w := s.newest.Load()
	// The start of the window the newest was opened for is most often the
	// very value: == spares After's call.
	if w != nil && (start == w.start || !start.After(w.start)) && w.admit(amount, limit) {
		if s.newest.Load() == w {
			return w, true
		}
		// A newer window opened meanwhile, and may have dropped w: the
		// money goes to the newest, as Reserve's would.
		w.release(amount)
	}
	return w, false
}

// holdMore admits amount more, held without a record as reserveUnleased
// holds, into window while it is the newest and has room (see
// budgetAttempt.holdAgain); settleUnleased releases it.
func (s *MemoryBudgetStore) holdMore(window string, amount, limit Money) bool {
	w := s.newest.Load()
	if w == nil || w.key != window {
		return false
	}
	got, ok := s.admitNewest(w.start, amount, limit)
	if ok && got != w { // a newer window opened meanwhile, and took it
		got.release(amount)
		return false
	}
	return ok
}

// admitting returns the window money is admitted into for a reservation in
// key, starting at start: key, or the newest window when that is newer.
// Moving to a newer window drops the older ones that hold nothing. s.mu is
// held.
func (s *MemoryBudgetStore) admitting(key string, start time.Time) *memWindow {
	if w := s.newest.Load(); w != nil && !start.After(w.start) {
		return w
	}
	w := s.windows[key]
	if w == nil {
		w = &memWindow{key: key, start: start, holds: make(map[uint64]memHold)}
		s.windows[key] = w
	}
	s.newest.Store(w)
	for k, old := range s.windows {
		if old != w && old.empty() {
			delete(s.windows, k)
		}
	}
	return w
}

// admit adds amount to w's held money if w's settled and held money plus
// amount stays within limit, and reports whether it did.
func (w *memWindow) admit(amount, limit Money) bool {
	if amount < 0 || amount > limit {
		return false
	}
	for {
		// settled saturates at 2·MaxBudgetLimit and held stays within
		// limit, at most MaxBudgetLimit: used cannot overflow, and
		// limit-amount, at least zero, cannot either.
		used := w.used.Load()
		if Money(used) > limit-amount {
			return false
		}
		if w.used.CompareAndSwap(used, used+int64(amount)) {
			w.held.Add(int64(amount))
			return true
		}
	}
}

// release gives back amount held in w.
func (w *memWindow) release(amount Money) {
	w.held.Add(-int64(amount))
	w.used.Add(-int64(amount))
}

// charge releases held and adds actual (saturated) to w's settled money,
// and returns the new settled total.
func (w *memWindow) charge(held, actual Money) Money {
	actual = min(max(actual, 0), 2*MaxBudgetLimit)
	for {
		old := w.settled.Load()
		settled := min(old+int64(actual), int64(2*MaxBudgetLimit))
		if w.settled.CompareAndSwap(old, settled) {
			// used moves by what settled gained less what is released,
			// in one step: it never counts less than the money settled
			// and held.
			w.used.Add(settled - old - int64(held))
			w.held.Add(-int64(held))
			return Money(settled)
		}
	}
}

// totals returns w's settled and held money.
func (w *memWindow) totals() (settled, held Money) {
	return Money(w.settled.Load()), Money(w.held.Load())
}

// hold records r, admitted, as held in w. s.mu is held.
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
		w.drop(r.ID, old)
	}
	w.holds[r.ID] = h
}

// drop releases the hold id. s.mu is held.
func (w *memWindow) drop(id uint64, h memHold) {
	delete(w.holds, id)
	w.release(h.amount)
	if !h.expires.IsZero() {
		w.leased--
	}
}

// expire releases the holds whose lease ended by now. s.mu is held.
func (w *memWindow) expire(now time.Time) {
	if w.leased == 0 || now.Before(w.nextExpiry) {
		return
	}
	var next time.Time
	for id, h := range w.holds {
		switch {
		case h.expires.IsZero():
		case !now.Before(h.expires):
			w.drop(id, h)
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
	w := s.settling(window)
	if w.leased > 0 {
		w.expire(s.now())
	}
	var held Money
	if h, ok := w.holds[id]; ok {
		delete(w.holds, id)
		if !h.expires.IsZero() {
			w.leased--
		}
		held = h.amount
	}
	settled := w.charge(held, actual)
	s.forgetIfDone(w)
	return settled, nil
}

// settleUnleased settles a reservation of reserveUnleased that holds held
// in window.
func (s *MemoryBudgetStore) settleUnleased(window string, held, actual Money) Money {
	if w := s.newest.Load(); w != nil && w.key == window {
		// Not dropped while it holds held: a newer window drops only
		// the windows that hold nothing.
		settled := w.charge(held, actual)
		if s.newest.Load() != w { // a newer window opened meanwhile
			s.mu.Lock()
			s.forgetIfDone(w)
			s.mu.Unlock()
		}
		return settled
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.settling(window)
	settled := w.charge(held, actual)
	s.forgetIfDone(w)
	return settled
}

// settling returns the window a settlement in window goes to. s.mu is
// held.
func (s *MemoryBudgetStore) settling(window string) *memWindow {
	if w := s.windows[window]; w != nil {
		return w
	}
	// Dropped: an old window nothing is admitted into any more. Its
	// settled money can no longer change what is admitted.
	return &memWindow{key: window, holds: make(map[uint64]memHold)}
}

// forgetIfDone drops w once it is older than the newest window and holds
// nothing. s.mu is held.
func (s *MemoryBudgetStore) forgetIfDone(w *memWindow) {
	if s.newest.Load() != w && w.empty() && s.windows[w.key] == w {
		delete(s.windows, w.key)
	}
}

// empty reports whether w holds nothing, not even a hold of $0 to settle.
// The store's mu is held.
func (w *memWindow) empty() bool { return w.held.Load() == 0 && len(w.holds) == 0 }

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
	settled, held = w.totals()
	return settled, held, nil
}
