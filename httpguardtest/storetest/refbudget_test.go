package storetest

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/holysheep/httpguard"
)

// refBudget is a plain BudgetStore, one mutex around everything, whose
// flags each break one promise of httpguard.BudgetStore: the mutants the
// suite must fail. With no flag set it keeps the contract.
type refBudget struct {
	mu      sync.Mutex
	newest  *refWindow
	windows map[string]*refWindow

	checkThenHold   bool // Reserve checks the room, lets go of the lock, then holds
	readThenSettle  bool // Settle reads settled, lets go of the lock, then writes it
	settleKeepsHold bool // Settle releases the hold without forgetting it: settled again, it is released again
	renewRevives    bool // Renew extends a lease that already ended
	renewLeasesAll  bool // Renew gives a lease to a reservation held without one
	lateOpensOld    bool // a reservation for an older window opens it again, from zero
	settleReopens   bool // a settlement in an older window makes it the one money is admitted into
	renewWritesBack bool // Renew reads the holds, lets go of the lock, then writes them back
	freeInLastLease bool // a refusal's FreeIn is until the last lease held ends, not the first
	renewFromTheEnd bool // Renew adds the lease to the lease's end, not to now
	// Settle reads the hold before it ends the leases due, and releases
	// it even when its lease ended: released twice
	settleReleasesEnded bool
	// a refusal's Settled is the window's settled and held money, as a
	// store that keeps only their sum would answer
	refusalSettledIsUsed bool
}

type refWindow struct {
	key     string
	start   time.Time
	settled httpguard.Money
	holds   map[uint64]refHold
	// released is money settleKeepsHold released without forgetting
	// the holds.
	released httpguard.Money
}

// held returns the money of the holds live at now.
func (w *refWindow) held(now time.Time) httpguard.Money {
	held := -w.released
	for _, h := range w.holds {
		if h.expires.IsZero() || now.Before(h.expires) {
			held += h.amount
		}
	}
	return held
}

type refHold struct {
	amount  httpguard.Money
	expires time.Time // zero: no lease
}

func newRefBudget() *refBudget { return &refBudget{windows: map[string]*refWindow{}} }

func (s *refBudget) window(key string, start time.Time) *refWindow {
	if s.newest != nil && !start.After(s.newest.start) && !(s.lateOpensOld && key != s.newest.key) {
		return s.newest
	}
	w := s.windows[key]
	if w == nil || s.lateOpensOld && w != s.newest {
		w = &refWindow{key: key, start: start, holds: map[uint64]refHold{}}
		s.windows[key] = w
	}
	if s.newest == nil || start.After(s.newest.start) || s.lateOpensOld {
		s.newest = w
	}
	return w
}

// expire forgets the holds whose lease ended by now, unless s keeps
// them for Renew to revive (as a store whose reads only filter them
// out, and whose renewal updates whatever is there, would).
func (s *refBudget) expire(w *refWindow, now time.Time) {
	if s.renewRevives {
		return
	}
	for id, h := range w.holds {
		if !h.expires.IsZero() && !now.Before(h.expires) {
			delete(w.holds, id)
		}
	}
}

func (s *refBudget) Reserve(_ context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	w := s.window(r.Window, r.Start)
	s.expire(w, now)
	res := httpguard.ReserveResult{Window: w.key}
	if r.Amount >= 0 && w.settled+w.held(now)+r.Amount <= limit {
		if s.checkThenHold {
			s.mu.Unlock()
			runtime.Gosched()
			s.mu.Lock()
		}
		h := refHold{amount: r.Amount}
		if r.Lease > 0 {
			h.expires = now.Add(r.Lease)
		}
		w.holds[r.ID] = h
		res.OK = true
	} else {
		for _, h := range w.holds {
			if d := h.expires.Sub(now); !h.expires.IsZero() && (res.FreeIn == 0 || d < res.FreeIn != s.freeInLastLease) {
				res.FreeIn = max(d, time.Nanosecond)
			}
		}
	}
	res.Settled, res.Held = w.settled, w.held(now)
	if !res.OK && s.refusalSettledIsUsed {
		res.Settled += res.Held
	}
	return res, nil
}

func (s *refBudget) Settle(_ context.Context, window string, id uint64, actual httpguard.Money) (httpguard.Money, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[window]
	if w == nil {
		w = &refWindow{key: window, holds: map[uint64]refHold{}}
		s.windows[window] = w
	} else if s.settleReopens && w.start.Before(s.newest.start) {
		s.newest = w // as a store that keeps "the current window" as the last one written
	}
	now := time.Now()
	read, held := w.holds[id]
	s.expire(w, now)
	if _, ok := w.holds[id]; s.settleReleasesEnded && held && !ok {
		w.released += read.amount // as from a sum the expiry already took it from
	}
	if h, ok := w.holds[id]; ok && (h.expires.IsZero() || now.Before(h.expires)) {
		if s.settleKeepsHold {
			w.released += h.amount
		} else {
			delete(w.holds, id)
		}
	}
	settled := w.settled
	if s.readThenSettle {
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
	}
	w.settled = settled + max(actual, 0)
	return w.settled, nil
}

func (s *refBudget) Renew(_ context.Context, window string, ids []uint64, lease time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[window]
	if w == nil {
		return nil
	}
	now := time.Now()
	s.expire(w, now)
	renewed := map[uint64]refHold{}
	for _, id := range ids {
		h, ok := w.holds[id]
		if !ok || h.expires.IsZero() && !s.renewLeasesAll || lease <= 0 {
			continue
		}
		if s.renewFromTheEnd {
			h.expires = h.expires.Add(lease)
		} else {
			h.expires = now.Add(lease)
		}
		renewed[id] = h
	}
	if s.renewWritesBack {
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
	}
	for id, h := range renewed {
		w.holds[id] = h
	}
	return nil
}

func (s *refBudget) Totals(_ context.Context, window string) (settled, held httpguard.Money, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[window]
	if w == nil {
		return 0, 0, nil
	}
	now := time.Now()
	s.expire(w, now)
	return w.settled, w.held(now), nil
}
