package httpguard

import (
	"context"
	"sync"
	"time"
)

// NewHintedLimitStore returns a MemoryLimitStore used as a Limiter uses its
// own: each key's state is kept in a hint, and turns and corrections go
// through takeAt and adjust, without the store's mu while the hint holds.
// The conformance suite, in the external test package, checks that path
// with it, from goroutines sharing a hint (a Limiter's share one per key,
// one at a time).
func NewHintedLimitStore() LimitStore {
	return &hintedStore{s: NewMemoryLimitStore()}
}

type hintedStore struct {
	s     *MemoryLimitStore
	hints sync.Map // key → *stateHint
}

func (h *hintedStore) hint(key string) *stateHint {
	p, _ := h.hints.LoadOrStore(key, new(stateHint))
	return p.(*stateHint)
}

func (h *hintedStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	wait, by, _, err := h.TakeTurn(ctx, key, reqs, toks, n)
	return wait, by, err
}

func (h *hintedStore) TakeTurn(_ context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, int64, error) {
	rb, tb := reqs.bucket(), toks.bucket()
	return h.s.takeAt(h.s.now(), key, h.hint(key), &rb, &tb, n)
}

func (h *hintedStore) Pause(ctx context.Context, key string, d time.Duration) error {
	return h.s.Pause(ctx, key, d)
}

func (h *hintedStore) Adjust(_ context.Context, key string, toks BucketLimit, n int64) error {
	tb := toks.bucket()
	h.s.adjust(key, h.hint(key), &tb, n, noEnd, noEnd)
	return nil
}

func (h *hintedStore) CreditTurn(_ context.Context, key string, toks BucketLimit, end, n int64) error {
	if n > 0 {
		tb := toks.bucket()
		h.s.adjust(key, h.hint(key), &tb, -n, end, noEnd)
	}
	return nil
}

func (h *hintedStore) Len() int { return h.s.Len() }
