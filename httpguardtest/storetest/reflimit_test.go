package storetest

import (
	"context"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/holysheep/httpguard"
)

// refLimit is a plain LimitStore, GCRA buckets under one mutex, whose
// flags each break one promise of httpguard.LimitStore: the mutants the
// suite must fail. With no flag set it keeps the contract.
type refLimit struct {
	mu   sync.Mutex
	base time.Time
	keys map[string]*refKey

	checkThenTake bool // Take reads the buckets, lets go of the lock, then writes them
	// Take reads the buckets, lets go of the lock, and writes them if
	// they did not change meanwhile, else tries again: the third time, it
	// writes them anyway (as a store whose optimistic transaction gives
	// up retrying would)
	retriesThenTakes bool
	takesOneByOne    bool // Take keeps the request when the tokens refuse
	pauseIgnored     bool // Pause does nothing
	lastPauseWins    bool // a pause ending sooner shortens the one in force
	creditBank       bool // a credit to a full bucket is kept, past Burst, for later takes
	debtUnbounded    bool // a debit may leave any debt
	adjustInSteps    bool // Adjust reads the bucket, lets go of the lock, then writes it
	creditInSteps    bool // a credit reads the bucket, lets go of the lock, then writes it
	creditsWhole     bool // CreditTurn gives back every token asked, owed or not
	endsAtTheTurn    bool // a turn's end is its tokens' own refill from the turn
	noEndNoCredit    bool // CreditTurn reads NoTurnEnd as a time long past: it gives nothing back
	aheadGoesNow     bool // a turn taken ahead of its time says it is due now
	aheadUncounted   bool // a turn taken ahead of its time takes nothing from its buckets
	aheadWaitLess    bool // a turn refused ahead says it can be taken ahead of its time
	aheadUnpaused    bool // a turn due after a pause ends, within ahead, is taken
	// a take without a requests limit is not paused, as a store that
	// reads the pause with the requests bucket
	pauseNeedsRequests bool
	requestsWaitOnly   bool // a take the requests refuse waits for them only, however long the tokens take
}

type refKey struct {
	reqs, toks int64 // theoretical arrival times, ns since base
	paused     int64
	bank       int64 // tokens creditBank kept
}

func newRefLimit() *refLimit { return &refLimit{base: time.Now(), keys: map[string]*refKey{}} }

func (s *refLimit) now() int64 { return int64(time.Since(s.base)) }

func (s *refLimit) key(k string) *refKey {
	st := s.keys[k]
	if st == nil {
		st = &refKey{reqs: math.MinInt64 / 2, toks: math.MinInt64 / 2, paused: math.MinInt64 / 2}
		s.keys[k] = st
	}
	return st
}

// refEvery and refSpan are a bucket's refill time of a token and of its burst,
// as httpguard.BucketLimit says: a token a nanosecond at most.
func refEvery(b httpguard.BucketLimit) int64 {
	return int64(min(max(math.Round(1e9/b.Rate), 1), float64(1<<62)))
}

func refSpan(b httpguard.BucketLimit) int64 { return refEvery(b) * b.Burst }

// gcraTake takes n tokens from the bucket of time tat when it has them
// within ahead of now: it returns the bucket's time after the take (tat
// when it refuses), how long until the bucket has them, and whether it
// took them.
func gcraTake(tat, now int64, b httpguard.BucketLimit, n, ahead int64) (int64, time.Duration, bool) {
	next := max(tat, now) + n*refEvery(b)
	wait := next - refSpan(b) - now
	if wait > ahead {
		return tat, time.Duration(wait), false
	}
	return next, time.Duration(max(wait, 0)), true
}

func (s *refLimit) Take(ctx context.Context, k string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, error) {
	wait, by, _, err := s.TakeTurn(ctx, k, reqs, toks, n)
	return wait, by, err
}

// TakeTurn's end is the tokens bucket's time after the take, in ns since
// base.
func (s *refLimit) TakeTurn(_ context.Context, k string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason, int64, error) {
	return s.takeTurn(k, reqs, toks, n, 0)
}

func (s *refLimit) TakeTurnAhead(_ context.Context, k string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64, error) {
	return s.takeTurn(k, reqs, toks, n, int64(ahead))
}

func (s *refLimit) takeTurn(k string, reqs, toks httpguard.BucketLimit, n, ahead int64) (time.Duration, httpguard.ThrottleReason, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeTurnLocked(k, reqs, toks, n, ahead, 0)
}

// takeTurnLocked is takeTurn with s.mu held; tries counts the tries
// retriesThenTakes made.
func (s *refLimit) takeTurnLocked(k string, reqs, toks httpguard.BucketLimit, n, ahead int64, tries int) (time.Duration, httpguard.ThrottleReason, int64, error) {
	st, now := s.key(k), s.now()
	if st.paused > now && !(s.aheadUnpaused && st.paused-now <= ahead) && !(s.pauseNeedsRequests && !(reqs.Rate > 0)) {
		return time.Duration(st.paused - now), httpguard.ThrottlePaused, httpguard.NoTurnEnd, nil
	}
	refused := func(wait time.Duration, by httpguard.ThrottleReason) (time.Duration, httpguard.ThrottleReason, int64, error) {
		if s.aheadWaitLess {
			wait = max(wait-time.Duration(ahead), time.Nanosecond)
		}
		return wait, by, httpguard.NoTurnEnd, nil
	}
	r, t, bank := st.reqs, st.toks, st.bank
	var wait time.Duration
	if reqs.Rate > 0 {
		var took bool
		if r, wait, took = gcraTake(r, now, reqs, 1, ahead); !took {
			by := httpguard.ThrottleRequests
			if toks.Rate > 0 && n > 0 && !s.requestsWaitOnly {
				// The take waits for both buckets: the tokens' wait, as
				// if asked alone, when it is the longer.
				if _, tw, took := gcraTake(t, now, toks, n-min(bank, n), ahead); !took && tw > wait {
					wait, by = tw, httpguard.ThrottleTokens
				}
			}
			return refused(wait, by)
		}
	}
	if s.takesOneByOne {
		st.reqs = r
	}
	if toks.Rate > 0 && n > 0 {
		fromBank := min(bank, n)
		tw, took := time.Duration(0), false
		if t, tw, took = gcraTake(t, now, toks, n-fromBank, ahead); !took {
			return refused(tw, httpguard.ThrottleTokens)
		}
		wait = max(wait, tw)
		bank -= fromBank
	}
	if wait > 0 && s.aheadUncounted {
		r, t = st.reqs, st.toks
	}
	if s.aheadGoesNow {
		wait = 0
	}
	if s.checkThenTake {
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
	}
	if s.retriesThenTakes {
		read := *st
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
		if *st != read && tries < 2 {
			return s.takeTurnLocked(k, reqs, toks, n, ahead, tries+1)
		}
	}
	st.reqs, st.toks, st.bank = r, t, bank
	end := httpguard.NoTurnEnd
	if toks.Rate > 0 && n > 0 {
		end = t
		if s.endsAtTheTurn {
			end = now + n*refEvery(toks)
		}
	}
	return wait, "", end, nil
}

func (s *refLimit) Pause(_ context.Context, k string, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.key(k)
	switch until := s.now() + int64(d); {
	case s.pauseIgnored:
	case s.lastPauseWins:
		st.paused = until
	default:
		st.paused = max(st.paused, until)
	}
	return nil
}

func (s *refLimit) Adjust(_ context.Context, k string, toks httpguard.BucketLimit, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !(toks.Rate > 0) || n == 0 {
		return nil
	}
	st, now := s.key(k), s.now()
	tat := max(st.toks, now)
	if n > 0 {
		debt := float64(tat) + float64(n)*float64(refEvery(toks))
		if !s.debtUnbounded {
			debt = min(debt, float64(max(st.toks, now+2*refSpan(toks)))) // one burst of debt, and nothing given back
		}
		if s.adjustInSteps {
			s.mu.Unlock()
			runtime.Gosched()
			s.mu.Lock()
		}
		st.toks = int64(min(debt, float64(math.MaxInt64/2)))
		return nil
	}
	credit := -float64(n) * float64(refEvery(toks))
	if s.creditInSteps {
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
	}
	if s.creditBank && float64(tat-now) < credit {
		st.bank += int64(min((credit-float64(tat-now))/float64(refEvery(toks)), 1<<40))
	}
	st.toks = max(int64(float64(tat)-min(credit, float64(tat-now))), now)
	return nil
}

// CreditTurn gives back what the bucket still owes of the turn's tokens:
// those it refills after now, until end.
func (s *refLimit) CreditTurn(ctx context.Context, k string, toks httpguard.BucketLimit, end, n int64) error {
	if n <= 0 || !(toks.Rate > 0) {
		return nil
	}
	if end == httpguard.NoTurnEnd && s.noEndNoCredit {
		return nil
	}
	if end != httpguard.NoTurnEnd && !s.creditsWhole {
		s.mu.Lock()
		owed := (end - s.now()) / refEvery(toks)
		s.mu.Unlock()
		n = min(n, max(owed, 0))
	}
	if n == 0 {
		return nil
	}
	return s.Adjust(ctx, k, toks, -n)
}
