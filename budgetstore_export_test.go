package httpguard

import (
	"context"
	"sync"
)

// NewUnleasedBudgetStore returns a MemoryBudgetStore used as a Budget uses
// its own: a reservation without a lease goes through reserveUnleased and
// is settled with settleUnleased, naming what it holds. The conformance
// suite, in the external test package, checks that path with it.
func NewUnleasedBudgetStore() BudgetStore {
	return &unleasedStore{MemoryBudgetStore: NewMemoryBudgetStore(), held: make(map[uint64]Money)}
}

type unleasedStore struct {
	*MemoryBudgetStore
	mu   sync.Mutex
	held map[uint64]Money // what each reservation without a lease holds
}

func (s *unleasedStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	if r.Lease > 0 {
		return s.MemoryBudgetStore.Reserve(ctx, r, limit)
	}
	res := s.reserveUnleased(r, limit)
	if res.OK {
		s.mu.Lock()
		s.held[r.ID] = r.Amount
		s.mu.Unlock()
	}
	return res, nil
}

func (s *unleasedStore) Settle(ctx context.Context, window string, id uint64, actual Money) (Money, error) {
	s.mu.Lock()
	amount, ok := s.held[id]
	delete(s.held, id)
	s.mu.Unlock()
	if !ok {
		return s.MemoryBudgetStore.Settle(ctx, window, id, actual)
	}
	return s.settleUnleased(window, amount, actual), nil
}
