package storetest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
)

// A store that violates a property must fail the suite. Each mutant below
// breaks one promise of httpguard.BudgetStore; the suite runs on it in a
// child process, which must fail. The child stops at the first subtest
// that fails (-test.failfast): one is enough, and the rest would only add
// their time.

// renewsFirstOnly renews only the first of the ids it is given.
type renewsFirstOnly struct{ httpguard.BudgetStore }

func (s renewsFirstOnly) Renew(ctx context.Context, window string, ids []uint64, lease time.Duration) error {
	return s.BudgetStore.Renew(ctx, window, ids[:min(len(ids), 1)], lease)
}

// renewsNothing renews no lease at all.
type renewsNothing struct{ httpguard.BudgetStore }

func (renewsNothing) Renew(context.Context, string, []uint64, time.Duration) error { return nil }

// leasesNeverEnd holds every reservation without a lease.
type leasesNeverEnd struct{ httpguard.BudgetStore }

func (s leasesNeverEnd) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	r.Lease = 0
	return s.BudgetStore.Reserve(ctx, r, limit)
}

// ordersByKey takes the window whose key sorts last for the newest,
// rather than the one that starts last.
type ordersByKey struct {
	httpguard.BudgetStore
	mu     sync.Mutex
	newest httpguard.Reservation
}

func (s *ordersByKey) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	s.mu.Lock()
	switch {
	case s.newest.Window == "" || r.Window > s.newest.Window:
		r.Start = later(r.Start, s.newest.Start)
		s.newest = r
	case r.Window < s.newest.Window:
		r.Window, r.Start, r.End = s.newest.Window, s.newest.Start, s.newest.End
	}
	s.mu.Unlock()
	return s.BudgetStore.Reserve(ctx, r, limit)
}

func later(t, u time.Time) time.Time {
	if t.After(u) {
		return t
	}
	return u.Add(time.Nanosecond)
}

var budgetMutants = map[string]func() httpguard.BudgetStore{
	"OrdersByKey":     func() httpguard.BudgetStore { return &ordersByKey{BudgetStore: httpguard.NewMemoryBudgetStore()} },
	"RenewsFirstOnly": func() httpguard.BudgetStore { return renewsFirstOnly{httpguard.NewMemoryBudgetStore()} },
	"RenewsNothing":   func() httpguard.BudgetStore { return renewsNothing{httpguard.NewMemoryBudgetStore()} },
	"LeasesNeverEnd":  func() httpguard.BudgetStore { return leasesNeverEnd{httpguard.NewMemoryBudgetStore()} },
	"CheckThenHold":   func() httpguard.BudgetStore { s := newRefBudget(); s.checkThenHold = true; return s },
	"ReadThenSettle":  func() httpguard.BudgetStore { s := newRefBudget(); s.readThenSettle = true; return s },
	"SettleKeepsHold": func() httpguard.BudgetStore { s := newRefBudget(); s.settleKeepsHold = true; return s },
	"RenewRevives":    func() httpguard.BudgetStore { s := newRefBudget(); s.renewRevives = true; return s },
	"RenewLeasesAll":  func() httpguard.BudgetStore { s := newRefBudget(); s.renewLeasesAll = true; return s },
	"LateOpensOld":    func() httpguard.BudgetStore { s := newRefBudget(); s.lateOpensOld = true; return s },
	"SettleReopens":   func() httpguard.BudgetStore { s := newRefBudget(); s.settleReopens = true; return s },
	"RenewWritesBack": func() httpguard.BudgetStore { s := newRefBudget(); s.renewWritesBack = true; return s },
	"LeasesEndEarly":  func() httpguard.BudgetStore { return leasesEndEarly{httpguard.NewMemoryBudgetStore()} },
	"FreeInTooSoon":   func() httpguard.BudgetStore { return freeInTooSoon{httpguard.NewMemoryBudgetStore()} },
	"FreeInLastLease": func() httpguard.BudgetStore { s := newRefBudget(); s.freeInLastLease = true; return s },
	"RenewFromTheEnd": func() httpguard.BudgetStore { s := newRefBudget(); s.renewFromTheEnd = true; return s },
	"SettleReleasesEnded": func() httpguard.BudgetStore {
		s := newRefBudget()
		s.settleReleasesEnded = true
		return s
	},
	"RefusalSettledIsUsed": func() httpguard.BudgetStore {
		s := newRefBudget()
		s.refusalSettledIsUsed = true
		return s
	},
}

// The mutants' base, with no flag set, keeps the contract: a mutant fails
// for what its flag breaks.
func TestBudgetStorePassesTheMutantsBase(t *testing.T) {
	BudgetStore(t, func(*testing.T) httpguard.BudgetStore { return newRefBudget() })
}

func TestBudgetStoreFailsMutants(t *testing.T) {
	if name := os.Getenv("STORETEST_MUTANT"); name != "" {
		BudgetStore(t, func(*testing.T) httpguard.BudgetStore { return budgetMutants[name]() })
		return
	}
	for name := range budgetMutants {
		t.Run(name, func(t *testing.T) { suiteFailsMutant(t, "TestBudgetStoreFailsMutants", "STORETEST_MUTANT", name) })
	}
}

// suiteFailsMutant runs test, in a process of its own, on the mutant
// name (set in env), and fails unless the suite fails it. A mutant that
// breaks atomicity (AdjustInSteps) is caught only when its race comes
// about, which on cores shared with other work a run may miss: the suite
// must fail it once in three runs.
func suiteFailsMutant(t *testing.T, test, env, name string) {
	t.Helper()
	var out []byte
	for range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.failfast")
		cmd.Env = append(os.Environ(), env+"="+name)
		var err error
		if out, err = cmd.CombinedOutput(); err != nil {
			return
		}
	}
	t.Errorf("the suite passed a store that breaks the contract, three times:\n%s", out)
}

var limitMutants = map[string]func() httpguard.LimitStore{
	"CheckThenTake":  func() httpguard.LimitStore { s := newRefLimit(); s.checkThenTake = true; return s },
	"TakesOneByOne":  func() httpguard.LimitStore { s := newRefLimit(); s.takesOneByOne = true; return s },
	"PauseIgnored":   func() httpguard.LimitStore { s := newRefLimit(); s.pauseIgnored = true; return s },
	"LastPauseWins":  func() httpguard.LimitStore { s := newRefLimit(); s.lastPauseWins = true; return s },
	"CreditBank":     func() httpguard.LimitStore { s := newRefLimit(); s.creditBank = true; return s },
	"DebtUnbounded":  func() httpguard.LimitStore { s := newRefLimit(); s.debtUnbounded = true; return s },
	"AdjustInSteps":  func() httpguard.LimitStore { s := newRefLimit(); s.adjustInSteps = true; return s },
	"CreditsWhole":   func() httpguard.LimitStore { s := newRefLimit(); s.creditsWhole = true; return s },
	"EndsAtTheTurn":  func() httpguard.LimitStore { s := newRefLimit(); s.endsAtTheTurn = true; return s },
	"NoEndNoCredit":  func() httpguard.LimitStore { s := newRefLimit(); s.noEndNoCredit = true; return s },
	"AheadGoesNow":   func() httpguard.LimitStore { s := newRefLimit(); s.aheadGoesNow = true; return s },
	"AheadUncounted": func() httpguard.LimitStore { s := newRefLimit(); s.aheadUncounted = true; return s },
	"AheadWaitLess":  func() httpguard.LimitStore { s := newRefLimit(); s.aheadWaitLess = true; return s },
	"AheadUnpaused":  func() httpguard.LimitStore { s := newRefLimit(); s.aheadUnpaused = true; return s },
	"PauseNeedsRequests": func() httpguard.LimitStore {
		s := newRefLimit()
		s.pauseNeedsRequests = true
		return s
	},
	"RetriesThenTakes":   func() httpguard.LimitStore { s := newRefLimit(); s.retriesThenTakes = true; return s },
	"CreditInSteps":      func() httpguard.LimitStore { s := newRefLimit(); s.creditInSteps = true; return s },
	"RequestsWaitOnly":   func() httpguard.LimitStore { s := newRefLimit(); s.requestsWaitOnly = true; return s },
	"CountsRefusedTakes": func() httpguard.LimitStore { return countsRefusedTakes{httpguard.NewMemoryLimitStore()} },
	"AcceptedCountsRefused": func() httpguard.LimitStore {
		return &acceptedCountsRefused{MemoryLimitStore: httpguard.NewMemoryLimitStore(),
			admitted: map[string][]time.Time{}, cut: map[string]httpguard.AdaptiveRate{}}
	},
	"CountsForever": func() httpguard.LimitStore {
		return &countsForever{MemoryLimitStore: httpguard.NewMemoryLimitStore(), keys: map[string]*foreverKey{}}
	},
	"FixedWindows": func() httpguard.LimitStore { return newFixedWindows() },
	"DecreaseDatedAtTheSend": func() httpguard.LimitStore {
		return &decreaseDatedAtTheSend{MemoryLimitStore: httpguard.NewMemoryLimitStore(), back: map[string]time.Duration{}}
	},
}

// The limit mutants' base, with no flag set, keeps the contract.
func TestLimitStorePassesTheMutantsBase(t *testing.T) {
	LimitStore(t, func(*testing.T) httpguard.LimitStore { return newRefLimit() })
}

func TestLimitStoreFailsMutants(t *testing.T) {
	if name := os.Getenv("STORETEST_LIMIT_MUTANT"); name != "" {
		LimitStore(t, func(*testing.T) httpguard.LimitStore { return limitMutants[name]() })
		return
	}
	for name := range limitMutants {
		t.Run(name, func(t *testing.T) { suiteFailsMutant(t, "TestLimitStoreFailsMutants", "STORETEST_LIMIT_MUTANT", name) })
	}
}
