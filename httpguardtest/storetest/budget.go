package storetest

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
)

// BudgetStore checks that stores made by newStore keep the BudgetStore
// contract: atomic reservations that never pass the limit, settlements,
// windows that only move forward, leases that end unless renewed, and all
// of it under concurrency. newStore must return a fresh, empty store each
// time; it may register cleanups on t. The suite uses real time (a shared
// store cannot take an injected clock), with leases of tens of
// milliseconds.
func BudgetStore(t *testing.T, newStore func(t *testing.T) httpguard.BudgetStore) {
	t.Run("ReservesWithinTheLimit", func(t *testing.T) { reservesWithinTheLimit(t, newStore(t)) })
	t.Run("SettleReleasesAndCharges", func(t *testing.T) { settleReleasesAndCharges(t, newStore(t)) })
	t.Run("UnknownWindowIsEmpty", func(t *testing.T) { unknownWindowIsEmpty(t, newStore(t)) })
	t.Run("WindowsOnlyMoveForward", func(t *testing.T) { windowsOnlyMoveForward(t, newStore(t)) })
	t.Run("LeasesEndUnlessRenewed", func(t *testing.T) { leasesEndUnlessRenewed(t, newStore) })
	t.Run("RefusalSaysWhenALeaseEnds", func(t *testing.T) { refusalSaysWhenALeaseEnds(t, newStore(t)) })
	t.Run("RenewalsBringNothingBack", func(t *testing.T) { renewalsBringNothingBack(t, newStore(t)) })
	t.Run("RenewalsRunFromNow", func(t *testing.T) { renewalsRunFromNow(t, newStore(t)) })
	t.Run("SettlingAnEndedLeaseReleasesNothing", func(t *testing.T) { settlingAnEndedLease(t, newStore(t)) })
	t.Run("ConcurrentReservationsNeverPassTheLimit", func(t *testing.T) { concurrentReservations(t, newStore(t)) })
	t.Run("RenewalsRacingSettlementsBringNothingBack", func(t *testing.T) { renewalsRacingSettlements(t, newStore(t)) })
	t.Run("NoWindowAdmitsMoreThanItsLimitAcrossABoundary", func(t *testing.T) { acrossABoundary(t, newStore(t)) })
}

var ids atomic.Uint64

func reservation(window string, start time.Time, amount httpguard.Money, lease time.Duration) httpguard.Reservation {
	return httpguard.Reservation{ID: ids.Add(1), Window: window, Start: start, End: start.Add(time.Hour), Amount: amount, Lease: lease}
}

// t0 is a day in the past: a shared store may refuse to open a window that
// has not started on its own clock (see httpguard.BudgetStore).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func reserve(t *testing.T, s httpguard.BudgetStore, r httpguard.Reservation, limit httpguard.Money) httpguard.ReserveResult {
	t.Helper()
	res, err := s.Reserve(context.Background(), r, limit)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func settle(t *testing.T, s httpguard.BudgetStore, window string, id uint64, actual httpguard.Money) httpguard.Money {
	t.Helper()
	settled, err := s.Settle(context.Background(), window, id, actual)
	if err != nil {
		t.Fatal(err)
	}
	return settled
}

func totals(t *testing.T, s httpguard.BudgetStore, window string) [2]httpguard.Money {
	t.Helper()
	settled, held, err := s.Totals(context.Background(), window)
	if err != nil {
		t.Fatal(err)
	}
	return [2]httpguard.Money{settled, held}
}

func reservesWithinTheLimit(t *testing.T, s httpguard.BudgetStore) {
	a := reserve(t, s, reservation("w", t0, 60, 0), 100)
	if !a.OK || a.Window != "w" || a.Held != 60 || a.Settled != 0 {
		t.Fatalf("first reservation of 60 in 100: %+v", a)
	}
	// A refusal's totals tell settled money from held: a Budget refuses at
	// once when the settled money alone leaves no room, and otherwise
	// waits for the holds to end.
	b := reserve(t, s, reservation("w", t0, 41, 0), 100)
	if b.OK || b.Held != 60 || b.Settled != 0 {
		t.Fatalf("41 more in 100 with 60 held must be refused, hold nothing, and say 0 settled, 60 held: %+v", b)
	}
	c := reserve(t, s, reservation("w", t0, 40, 0), 100)
	if !c.OK || c.Held != 100 {
		t.Fatalf("exactly the rest must fit: %+v", c)
	}
	if got := totals(t, s, "w"); got != [2]httpguard.Money{0, 100} {
		t.Fatalf("totals %v, want settled 0, held 100", got)
	}
	if d := reserve(t, s, reservation("w", t0, -1, 0), 100); d.OK {
		t.Fatalf("a negative amount must not be held: %+v", d)
	}
}

func settleReleasesAndCharges(t *testing.T, s httpguard.BudgetStore) {
	r := reservation("w", t0, 70, 0)
	reserve(t, s, r, 100)
	settled := settle(t, s, "w", r.ID, 30)
	if settled != 30 {
		t.Fatalf("settled %v after charging 30, want 30", settled)
	}
	if got := totals(t, s, "w"); got != [2]httpguard.Money{30, 0} {
		t.Fatalf("totals %v, want settled 30, held 0", got)
	}
	// Settling the same ID again only charges: the hold is gone already.
	if settled := settle(t, s, "w", r.ID, 5); settled != 35 {
		t.Fatalf("settled %v, want 35", settled)
	}
	// A charge above the reservation is counted whole: it was spent.
	r2 := reservation("w", t0, 10, 0)
	reserve(t, s, r2, 100)
	if settled := settle(t, s, "w", r2.ID, 50); settled != 85 {
		t.Fatalf("settled %v, want 85", settled)
	}
	if res := reserve(t, s, reservation("w", t0, 16, 0), 100); res.OK || res.Settled != 85 || res.Held != 0 {
		t.Fatalf("16 must not fit in 100 with 85 settled, nothing held: %+v", res)
	}
	if res := reserve(t, s, reservation("w", t0, 15, 0), 100); !res.OK || res.Settled != 85 {
		t.Fatalf("15 must fit in 100 with 85 settled: %+v", res)
	}
}

func unknownWindowIsEmpty(t *testing.T, s httpguard.BudgetStore) {
	if got := totals(t, s, "never-seen"); got != [2]httpguard.Money{} {
		t.Fatalf("totals of an unknown window %v, want zero", got)
	}
}

func windowsOnlyMoveForward(t *testing.T, s httpguard.BudgetStore) {
	// The newer window's key sorts first: newer is by Start, not by key.
	first := reservation("day:9", t0, 80, 0)
	reserve(t, s, first, 100)
	settle(t, s, "day:9", first.ID, 70)
	// A request sent in day:9 is still in flight when day:10 opens.
	inFlight := reservation("day:9", t0, 10, 0)
	reserve(t, s, inFlight, 100)
	next := reserve(t, s, reservation("day:10", t0.Add(24*time.Hour), 10, 0), 100)
	if !next.OK || next.Window != "day:10" || next.Settled != 0 {
		t.Fatalf("a newer window starts from zero: %+v", next)
	}
	// Its settlement is day:9's, and leaves day:10 the window money goes to.
	if settled := settle(t, s, "day:9", inFlight.ID, 10); settled != 80 {
		t.Fatalf("day:9 settled %v after its request in flight, want 80", settled)
	}
	// A request that read the clock in day:9 reaches the store late: day:9
	// must not admit money again, even though it had room.
	late := reserve(t, s, reservation("day:9", t0, 20, 0), 100)
	if !late.OK || late.Window != "day:10" {
		t.Fatalf("a reservation for an older window goes to the newest one: %+v", late)
	}
	if got := totals(t, s, "day:10"); got != [2]httpguard.Money{0, 30} {
		t.Fatalf("day:10 totals %v, want 30 held", got)
	}
	over := reserve(t, s, reservation("day:9", t0, 71, 0), 100)
	if over.OK {
		t.Fatalf("the newest window's limit applies to late reservations: %+v", over)
	}
}

func leasesEndUnlessRenewed(t *testing.T, newStore func(t *testing.T) httpguard.BudgetStore) {
	// A renewal must reach the store before the lease it renews ends, which
	// real time cannot promise on a loaded machine: a round too slow for its
	// lease proves nothing, and the next one, on a fresh store, has a lease
	// twice as long.
	for round, lease := 1, 100*time.Millisecond; ; round, lease = round+1, 2*lease {
		if leasesEndUnlessRenewedWithin(t, newStore(t), lease) {
			return
		}
		if lease >= 5*time.Second {
			t.Fatalf("%d rounds, none of which reserved and renewed within its lease, the last %v", round, lease)
		}
	}
}

// leasesEndUnlessRenewedWithin holds two reservations with lease in s,
// renews one, and checks that both are held for their lease, and that then
// the other's money comes back and the renewed one's does not. It reports
// false, having checked nothing, when the store may have seen the renewal
// after the lease it renews had ended, or when the check of the holds
// near the lease's end came after it.
func leasesEndUnlessRenewedWithin(t *testing.T, s httpguard.BudgetStore, lease time.Duration) bool {
	ctx := context.Background()
	const window = "w"
	alive := reservation(window, t0, 50, lease) // renewed while it runs
	dead := reservation(window, t0, 40, lease)  // its process died: never renewed
	start := time.Now()
	reserve(t, s, alive, 100)
	// Held after alive, dead's lease ends after alive's first one.
	reserve(t, s, dead, 100)
	full := reserve(t, s, reservation(window, t0, 20, 0), 100)
	// Unknown ids on both sides of the live one: a store must skip them and
	// still renew it.
	if err := s.Renew(ctx, window, []uint64{424242, alive.ID, 424243}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) >= lease {
		return false
	}
	if full.OK {
		t.Fatalf("90 held: 20 must not fit yet: %+v", full)
	}
	// Most of the lease gone, both are still held: a lease that ends early
	// releases the money of an attempt still running.
	time.Sleep(time.Until(start.Add(lease * 4 / 5)))
	early := totals(t, s, window)
	if time.Since(start) >= lease {
		return false
	}
	if early[1] != 90 {
		t.Fatalf("totals %v %v into leases of %v, want 90 held: a lease ended early", early, time.Since(start), lease)
	}
	deadline := time.Now().Add(max(10*lease, 5*time.Second))
	held := totals(t, s, window)[1]
	for ; held == 90; held = totals(t, s, window)[1] {
		if time.Now().After(deadline) {
			t.Fatalf("the unrenewed lease never ended: totals %v", totals(t, s, window))
		}
		time.Sleep(lease / 4)
	}
	if held != 50 {
		t.Fatalf("held %v once the unrenewed lease ended, want 50: the renewed one's", held)
	}
	if res := reserve(t, s, reservation(window, t0, 50, 0), 100); !res.OK {
		t.Fatalf("the dead reservation's money is back: %+v", res)
	}
	// Settling after the lease ended still charges.
	if settled := settle(t, s, window, dead.ID, 7); settled != 7 {
		t.Fatalf("settled %v, want 7", settled)
	}
	settle(t, s, window, alive.ID, 0)
	if got := totals(t, s, window); got != [2]httpguard.Money{7, 50} {
		t.Fatalf("totals %v, want settled 7, held 50", got)
	}
	return true
}

// renewalsBringNothingBack renews a reservation already settled and one
// whose lease ended, as a Budget's renewal timer may when it races the
// settlement or runs late: neither is held again. A reservation held
// without a lease, renewed too, keeps no lease: it is held until settled.
func renewalsBringNothingBack(t *testing.T, s httpguard.BudgetStore) {
	const lease = 30 * time.Millisecond
	settled := reservation("w", t0, 40, time.Minute)
	expired := reservation("w", t0, 50, lease)
	unleased := reservation("w", t0, 5, 0)
	reserve(t, s, settled, 100)
	reserve(t, s, expired, 100)
	reserve(t, s, unleased, 100)
	if err := s.Renew(context.Background(), "w", []uint64{unleased.ID}, lease); err != nil {
		t.Fatal(err)
	}
	settle(t, s, "w", settled.ID, 5)
	for deadline := time.Now().Add(100 * lease); totals(t, s, "w")[1] > 5; time.Sleep(lease / 3) {
		if time.Now().After(deadline) {
			t.Fatalf("the unrenewed lease never ended: totals %v", totals(t, s, "w"))
		}
	}
	time.Sleep(lease) // past the lease a renewal would have given the unleased one
	if err := s.Renew(context.Background(), "w", []uint64{settled.ID, expired.ID}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, s, "w"); got != [2]httpguard.Money{5, 5} {
		t.Fatalf("totals %v after renewing a settled and an expired reservation, and an unleased one long ago, want settled 5, held 5", got)
	}
	if res := reserve(t, s, reservation("w", t0, 90, 0), 100); !res.OK {
		t.Fatalf("the money of the settled and the expired one is free: %+v", res)
	}
}

// renewalsRunFromNow renews a reservation ten times in a row: its lease
// then ends a lease after the last renewal. A store that added each
// renewal to the lease's end would keep a dead process's money long after
// it: a Budget renews every third of a lease, so an hour of renewals
// would leave two hours of hold.
func renewalsRunFromNow(t *testing.T, s httpguard.BudgetStore) {
	const lease = 100 * time.Millisecond
	r := reservation("w", t0, 50, lease)
	reserve(t, s, r, 100)
	for range 10 {
		if err := s.Renew(context.Background(), "w", []uint64{r.ID}, lease); err != nil {
			t.Fatal(err)
		}
	}
	renewed := time.Now()
	// The lease ends by renewed+lease; a store may hold it longer while
	// calls about the window pause (redisguard's leases stop while no one
	// could reach Redis), hence the margin.
	for {
		asked := time.Since(renewed)
		if got := totals(t, s, "w"); got[1] == 0 {
			return
		} else if asked > 5*lease {
			t.Fatalf("totals %v %v after the last of 10 renewals for %v: a renewal's lease runs from now, not from the end of the last one", got, asked, lease)
		}
		time.Sleep(lease / 4)
	}
}

// settlingAnEndedLease settles a reservation whose lease ended with no
// call to the store since, as an attempt whose renewals did not reach the
// store is settled: the store finds the lease ended as it settles, and its
// money, released by the lease's end, is not released again (from the
// other holds, which a store keeping the sum of its holds would). A store
// whose leases stop while no call reaches it (redisguard's) holds the
// reservation still, and releases it once.
func settlingAnEndedLease(t *testing.T, s httpguard.BudgetStore) {
	const lease = 30 * time.Millisecond
	ended := reservation("w", t0, 40, lease)
	reserve(t, s, ended, 100)
	reserve(t, s, reservation("w", t0, 50, 0), 100)
	time.Sleep(2 * lease)

	if settled := settle(t, s, "w", ended.ID, 7); settled != 7 {
		t.Fatalf("settled %v, want 7", settled)
	}
	if got := totals(t, s, "w"); got != [2]httpguard.Money{7, 50} {
		t.Fatalf("totals %v after settling a reservation whose lease had ended, want settled 7, held 50", got)
	}
	if res := reserve(t, s, reservation("w", t0, 44, 0), 100); res.OK {
		t.Fatalf("44 must not fit in 100 with 7 settled and 50 held: %+v", res)
	}
}

// refusalSaysWhenALeaseEnds holds three reservations whose leases end
// neither in the order they were held nor in its reverse: a refusal says
// when the first of them ends, which a Budget waiting for room sleeps
// until. Sooner, it would ask the store again and again for nothing;
// later, it would sleep past the room a dead process's hold leaves.
func refusalSaysWhenALeaseEnds(t *testing.T, s httpguard.BudgetStore) {
	const first = 2 * time.Second
	start := time.Now()
	for _, lease := range []time.Duration{5 * time.Second, first, 4 * time.Second} {
		reserve(t, s, reservation("w", t0, 30, lease), 100)
	}
	res := reserve(t, s, reservation("w", t0, 20, 0), 100)
	// The first lease ends at least first after start, on a clock of
	// whole milliseconds (Redis's).
	soonest := first - time.Since(start) - time.Millisecond
	if res.OK || res.FreeIn < soonest || res.FreeIn > first {
		t.Fatalf("a refusal while leased reservations hold the room says when the first lease ends, in [%v, %v]: %+v", soonest, first, res)
	}
}

func concurrentReservations(t *testing.T, s httpguard.BudgetStore) {
	ctx := context.Background()
	const limit, amount, workers = 1000, 7, 50
	for round := range 3 {
		var mu sync.Mutex
		var got []httpguard.Reservation
		var wg sync.WaitGroup
		var failed atomic.Value
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					r := reservation("w", t0, amount, 0)
					res, err := s.Reserve(ctx, r, limit)
					if err != nil {
						failed.Store(err)
						return
					}
					if res.OK {
						mu.Lock()
						got = append(got, r)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatal(err)
		}
		settled := totals(t, s, "w")[0]
		held := httpguard.Money(len(got)) * amount
		if settled+held > limit || settled+held <= limit-amount {
			t.Fatalf("round %d: %v settled and %v held by %d concurrent reservations: want the limit %d filled, never passed",
				round, settled, held, len(got), limit)
		}
		if h := totals(t, s, "w")[1]; h != held {
			t.Fatalf("round %d: the store holds %v, the reservations it granted %v", round, h, held)
		}
		for _, r := range got {
			if _, err := s.Settle(ctx, "w", r.ID, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// renewalsRacingSettlements renews reservations while they are settled, as
// a Budget's renewal timer does while its attempts end: a renewal must not
// bring back a hold settled meanwhile (one that read the holds before the
// settlement and wrote them after would hold its money for a lease more).
func renewalsRacingSettlements(t *testing.T, s httpguard.BudgetStore) {
	ctx := context.Background()
	const n = 200
	held := make([]uint64, 0, n)
	for range n {
		r := reservation("w", t0, 1, time.Minute)
		reserve(t, s, r, n)
		held = append(held, r.ID)
	}
	done := make(chan struct{})
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := s.Renew(ctx, "w", held, time.Minute); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	for _, id := range held {
		settle(t, s, "w", id, 1)
		runtime.Gosched() // let a renewal in between
	}
	close(done)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, s, "w"); got != [2]httpguard.Money{n, 0} {
		t.Fatalf("totals %v after settling every reservation while they were renewed, want settled %d, held 0", got, n)
	}
}

// acrossABoundary has goroutines reserve in windows of a few milliseconds,
// each reading its own clock, some of them late: per window, the money
// admitted (held and then charged in full) never passes the limit.
func acrossABoundary(t *testing.T, s httpguard.BudgetStore) {
	ctx := context.Background()
	const limit, amount, workers = 50, 10, 50
	const window = 3 * time.Millisecond
	var mu sync.Mutex
	admitted := map[string]httpguard.Money{}
	var wg sync.WaitGroup
	var failed atomic.Value
	// At least 60ms, and on until the run has admitted money in two
	// windows: a loaded machine may not run the workers within 60ms.
	stop := time.Now().Add(60 * time.Millisecond)
	giveUp := time.Now().Add(time.Minute)
	var windows atomic.Int32
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for now := time.Now(); now.Before(stop) || windows.Load() < 2 && now.Before(giveUp); now = time.Now() {
				start := now.Truncate(window)
				key := fmt.Sprint("window:", start.UnixNano())
				r := httpguard.Reservation{ID: ids.Add(1), Window: key, Start: start, End: start.Add(window), Amount: amount}
				res, err := s.Reserve(ctx, r, limit)
				if err != nil {
					failed.Store(err)
					return
				}
				if !res.OK {
					continue
				}
				mu.Lock()
				if admitted[res.Window] == 0 {
					windows.Add(1)
				}
				admitted[res.Window] += amount
				mu.Unlock()
				if _, err := s.Settle(ctx, res.Window, r.ID, amount); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if len(admitted) < 2 {
		t.Fatalf("the run crossed no window boundary: %v", admitted)
	}
	for w, m := range admitted {
		if m > limit {
			t.Errorf("window %s admitted %v, past its limit %d", w, m, limit)
		}
	}
}
