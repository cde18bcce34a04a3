package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/holysheep/httpguard"
)

// More mutants, each breaking one promise the suite once let pass.

// leasesEndEarly holds and renews every lease for half its length: a
// live attempt's money is released while it runs.
type leasesEndEarly struct{ httpguard.BudgetStore }

func (s leasesEndEarly) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	r.Lease /= 2
	return s.BudgetStore.Reserve(ctx, r, limit)
}

func (s leasesEndEarly) Renew(ctx context.Context, window string, ids []uint64, lease time.Duration) error {
	return s.BudgetStore.Renew(ctx, window, ids, lease/2)
}

// freeInTooSoon says room may free at once whenever a lease is held: a
// Budget waiting for room asks the store again and again.
type freeInTooSoon struct{ httpguard.BudgetStore }

func (s freeInTooSoon) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	res, err := s.BudgetStore.Reserve(ctx, r, limit)
	if res.FreeIn > 0 {
		res.FreeIn = time.Nanosecond
	}
	return res, err
}

// countsRefusedTakes counts the requests its Take refuses among those it
// admitted, in the share of 429s SlowDown judges: a key that is refused
// often tolerates more 429s.
type countsRefusedTakes struct{ *httpguard.MemoryLimitStore }

func (s countsRefusedTakes) Take(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, error) {
	wait, by, err := s.MemoryLimitStore.Take(ctx, key, reqs, toks, n)
	if err == nil && wait > 0 && reqs.Rate > 0 {
		// A take of a bucket that always has room: counted as admitted.
		_, _, err = s.MemoryLimitStore.Take(ctx, key, httpguard.BucketLimit{Rate: 1e9, Burst: 1 << 40}, httpguard.BucketLimit{}, 0)
	}
	return wait, by, err
}

// decreaseDatedAtTheSend dates a decrease at the time the request whose
// 429 made it was sent, not at the decrease: its Since runs ahead by the
// request's time in flight, and the rate recovers that much sooner.
type decreaseDatedAtTheSend struct {
	*httpguard.MemoryLimitStore
	mu   sync.Mutex
	back map[string]time.Duration
}

func (s *decreaseDatedAtTheSend) SlowDown(ctx context.Context, key string, sentAgo time.Duration, rate, tolerated float64) (httpguard.AdaptiveRate, bool, error) {
	before, err := s.MemoryLimitStore.AdaptiveRate(ctx, key)
	if err != nil {
		return httpguard.AdaptiveRate{}, false, err
	}
	ar, beyond, err := s.MemoryLimitStore.SlowDown(ctx, key, sentAgo, rate, tolerated)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ar.Decreases != before.Decreases {
		s.back[key] = sentAgo
	}
	if ar.Decreases > 0 {
		ar.Since += s.back[key]
	}
	return ar, beyond, err
}

func (s *decreaseDatedAtTheSend) AdaptiveRate(ctx context.Context, key string) (httpguard.AdaptiveRate, error) {
	ar, err := s.MemoryLimitStore.AdaptiveRate(ctx, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ar.Decreases > 0 {
		ar.Since += s.back[key]
	}
	return ar, err
}

// acceptedCountsRefused cuts from the rate its requests were admitted at,
// not accepted at: the 429s among them are counted as accepted.
type acceptedCountsRefused struct {
	*httpguard.MemoryLimitStore
	mu       sync.Mutex
	admitted map[string][]time.Time
	cut      map[string]httpguard.AdaptiveRate
}

func (s *acceptedCountsRefused) Take(ctx context.Context, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, error) {
	wait, by, err := s.MemoryLimitStore.Take(ctx, key, reqs, toks, n)
	if err == nil && wait == 0 && reqs.Rate > 0 {
		s.mu.Lock()
		s.admitted[key] = append(s.admitted[key], time.Now())
		s.mu.Unlock()
	}
	return wait, by, err
}

func (s *acceptedCountsRefused) SlowDown(ctx context.Context, key string, sentAgo time.Duration, rate, tolerated float64) (httpguard.AdaptiveRate, bool, error) {
	ar, beyond, err := s.MemoryLimitStore.SlowDown(ctx, key, sentAgo, rate, tolerated)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cut := s.cut[key]; err == nil && ar.Decreases != cut.Decreases {
		// A new decrease: from the requests admitted over the last
		// second, 429s and all.
		admitted := s.admitted[key]
		if len(admitted) > 0 {
			if span := min(time.Since(admitted[0]), time.Second); span > 0 {
				ar.From = min(rate, float64(len(admitted))/span.Seconds())
			}
		}
		s.cut[key] = ar
	}
	if cut := s.cut[key]; cut.Decreases == ar.Decreases {
		ar.From = cut.From
	}
	return ar, beyond, err
}

func (s *acceptedCountsRefused) AdaptiveRate(ctx context.Context, key string) (httpguard.AdaptiveRate, error) {
	ar, err := s.MemoryLimitStore.AdaptiveRate(ctx, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cut := s.cut[key]; cut.Decreases == ar.Decreases && ar.Decreases > 0 {
		ar.From = cut.From
	}
	return ar, err
}
