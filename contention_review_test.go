package httpguard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Many goroutines reserve and settle in a MemoryBudgetStore whose window
// moves every few hundred operations, some without a lease (a Budget's own
// path, by compare-and-swap) and some with one (by ID, under the lock).
// Every settlement is at most its reservation, so the money settled into a
// window never passes the Limit, whatever the interleaving; and the newest
// window's totals are, at the end, what was settled into it.
func TestMemoryBudgetStoreWindowNeverPassesItsLimitUnderContention(t *testing.T) {
	const limit, windows, workers = Money(1000), 40, 8
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := newMemoryBudgetStore(func() time.Time { return base })
	var cur atomic.Int64 // the window the clock is in
	var ids atomic.Uint64
	var mu sync.Mutex
	settledIn := make(map[string]Money) // what the test settled, by the window the store named
	ctx := context.Background()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; cur.Load() < windows; i++ {
				if w == 0 && i%50 == 49 {
					cur.Add(1) // the clock moves into the next window
				}
				idx := cur.Load()
				r := Reservation{ID: ids.Add(1), Window: fmt.Sprintf("w%03d", idx), Start: base.Add(time.Duration(idx) * time.Millisecond),
					Amount: Money(rng.IntN(300))}
				leased := w%3 == 0
				var res ReserveResult
				if leased {
					r.Lease = time.Hour
					res, _ = s.Reserve(ctx, r, limit)
				} else {
					res = s.reserveUnleased(r, limit)
				}
				if res.Settled < 0 || res.Held < 0 {
					t.Errorf("window %s: settled %d, held %d", res.Window, res.Settled, res.Held)
				}
				if !res.OK {
					continue
				}
				actual := Money(rng.IntN(int(r.Amount) + 1))
				mu.Lock()
				settledIn[res.Window] += actual
				mu.Unlock()
				if leased {
					_, _ = s.Settle(ctx, res.Window, r.ID, actual)
				} else {
					s.settleUnleased(res.Window, r.Amount, actual)
				}
			}
		}()
	}
	wg.Wait()
	for win, sum := range settledIn {
		assert.LessOrEqual(t, sum, limit, "window %s", win)
	}
	newest := s.newest.Load()
	settled, held, err := s.Totals(ctx, newest.key)
	require.NoError(t, err)
	assert.Equal(t, settledIn[newest.key], settled, "newest window %s", newest.key)
	assert.Zero(t, held)
	assert.Equal(t, int64(settled), newest.used.Load())
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Len(t, s.windows, 1, "old windows that hold nothing are dropped")
}

// storeClock is a clock goroutines read and move without a lock.
type storeClock struct {
	base time.Time
	ns   atomic.Int64
}

func (c *storeClock) Now() time.Time { return c.base.Add(time.Duration(c.ns.Load())) }

// Goroutines sharing a key's hint take turns and tokens from a
// MemoryLimitStore without its lock, give tokens back at once, while the
// clock moves by small steps and, now and then, jumps past every bucket so
// that sweeps drop the key under them. Per stretch of time between jumps
// the store admits no more requests than Burst plus the rate times the
// stretch, and no more tokens (net of those given back) either.
func TestMemoryLimitStoreLockFreeTurnsKeepTheRate(t *testing.T) {
	clk := &storeClock{base: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	s := newMemoryLimitStore(clk.Now)
	reqs := BucketLimit{Rate: 2000, Burst: 4}
	toks := BucketLimit{Rate: 20000, Burst: 200}
	rb, tb := reqs.bucket(), toks.bucket()
	var hints [2]stateHint
	const epochs, steps = 12, 30

	type tally struct {
		reqs, toks atomic.Int64
	}
	var tallies [epochs + 1][2]tally
	// A turn holds jump's read lock from before its reading of the clock
	// until it is tallied, and the clock jumps under its write lock, so
	// that each turn is tallied in the stretch it was taken in. (A turn
	// read in one stretch and asked in the next is
	// TestMemoryLimitStoreTurnReadBeforeItsKeyWasDroppedCountsFromTheDrop.)
	var jump sync.RWMutex
	var epoch, ops atomic.Int64
	var done atomic.Bool
	var wg sync.WaitGroup
	untilDone(&wg, &done, 6, 11, func(rng *rand.Rand) {
		defer runtime.Gosched() // a turn at a time: the clock's mover waits for turns
		jump.RLock()
		defer jump.RUnlock()
		e := epoch.Load()
		at := clk.Now()
		k := rng.IntN(2)
		n := int64(1 + rng.IntN(60))
		wait, _, _, err := s.takeAt(at, fmt.Sprint("k", k), &hints[k], &rb, &tb, n)
		ops.Add(1)
		if !assert.NoError(t, err) || wait > 0 { // not require: this is a worker's goroutine
			return
		}
		tl := &tallies[e][k]
		tl.reqs.Add(1)
		back := int64(rng.IntN(int(n) + 1))
		if rng.IntN(2) == 0 {
			back = 0
		}
		tl.toks.Add(n - back)
		s.adjust(fmt.Sprint("k", k), &hints[k], &tb, -back, noEnd, noEnd)
	})
	for e := range epochs {
		for range steps {
			clk.ns.Add(int64(50 * time.Microsecond))
			for from := ops.Load(); ops.Load() < from+6; {
				runtime.Gosched() // let the workers take a few turns at this time
			}
		}
		// Jump past every bucket and the next sweep: the stretch ends.
		jump.Lock()
		epoch.Store(int64(e + 1))
		clk.ns.Add(int64(3 * time.Second))
		jump.Unlock()
	}
	done.Store(true)
	wg.Wait()
	span := (steps * 50 * time.Microsecond).Seconds()
	var refused int
	for e := range epochs {
		for k := range 2 {
			if tallies[e][k].reqs.Load() >= reqs.Burst+int64(span*reqs.Rate)-1 {
				refused++
			}
		}
	}
	require.Positive(t, refused, "no stretch reached its limit: the test did not test it")
	for e := range epochs {
		for k := range 2 {
			tl := &tallies[e][k]
			assert.LessOrEqual(t, float64(tl.reqs.Load()), float64(reqs.Burst)+span*reqs.Rate+1, "epoch %d key %d: requests", e, k)
			assert.LessOrEqual(t, float64(tl.toks.Load()), float64(toks.Burst)+span*toks.Rate+60, "epoch %d key %d: tokens", e, k)
		}
	}
}

// Goroutines released together ask a key's state, through its hint and
// without the store's lock, for a turn at the same instant, again and
// again on new keys: the compare-and-swaps that race admit exactly what
// the bucket holds. (Under -race the window between a turn's read and
// its swap is wide enough for the goroutines to meet in it every few
// rounds.)
func TestMemoryLimitStoreSimultaneousLockFreeTurnsTakeTheBurstExactly(t *testing.T) {
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	reqs := BucketLimit{Rate: 1, Burst: 4}
	rb, none := reqs.bucket(), BucketLimit{}.bucket()
	at := clk.Now()
	for round := range 300 {
		key := fmt.Sprint("k", round)
		var hint stateHint
		_, _, _, err := s.takeAt(at, key, &hint, &rb, &none, 0) // the first turn: the key's state, in the hint
		require.NoError(t, err)
		var admitted atomic.Int64
		var start, wg sync.WaitGroup
		start.Add(1)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start.Wait()
				wait, _, _, err := s.takeAt(at, key, &hint, &rb, &none, 0)
				if assert.NoError(t, err) && wait == 0 {
					admitted.Add(1)
				}
			}()
		}
		start.Done()
		wg.Wait()
		require.EqualValues(t, reqs.Burst-1, admitted.Load(), "round %d: turns after the first", round)
	}
}

// Goroutines send through one Budget (its own store, no lease) whose 1 ms
// windows the clock crosses every few dozen requests; the server bills
// every attempt it receives its full reservation. No window is charged
// more than the Limit, and the bill is what the Budget settled.
func TestBudgetWindowsHoldTheirLimitUnderContentionAtTheirBoundaries(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m", 10)
	one := reservation(body, 10)
	limit := one*3 + one/2
	var mu sync.Mutex
	charged := make(map[string]Money)
	var total Money
	b := newTestBudget(t, BudgetConfig{Limit: limit, Window: time.Millisecond, MaxWait: -1, OnSettle: func(s Settlement) {
		mu.Lock()
		charged[s.Window] += s.Charged
		total += s.Charged
		mu.Unlock()
	}})
	var clock, sent atomic.Int64
	clock.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	b.now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	client := api.client(t, b)

	hammer(6, 40, func() {
		if sent.Add(1)%10 == 0 {
			clock.Add(int64(time.Millisecond))
		}
		_, err := send(t, client, api.srv.URL, body)
		if err != nil && !errors.Is(err, ErrBudgetExceeded) {
			t.Error(err)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, Money(api.hits.Load())*one, total, "the bill is what was settled")
	for w, c := range charged {
		assert.LessOrEqual(t, c, limit, "window %s", w)
	}
	assert.Greater(t, len(charged), 10)
}

// Goroutines send through a Limiter with its own store (turns taken
// without the key's mutex) at a frozen clock, never waiting; each answer
// reports fewer tokens than estimated, which the Limiter gives back while
// the others take theirs. The tokens the server billed stay within the
// bucket (TokensPerMinute, all of it at a frozen clock), and the requests
// within Burst.
func TestLimiterWithItsOwnStoreKeepsTokensAndBurstUnderContention(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  LimitConfig
	}{
		{"tokens bind", LimitConfig{RequestsPerSecond: 1000, Burst: 1000, TokensPerMinute: 20000, MaxWait: -1}},
		{"requests bind", LimitConfig{RequestsPerSecond: 1000, Burst: 25, TokensPerMinute: 1_000_000, MaxWait: -1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newFakeClock(block)
			l := newOwnLimiter(t, c.cfg, clk)
			var billed, hits atomic.Int64
			srv, client := newUsageServer(t, l, 100, 200, func(*http.Request) {
				hits.Add(1)
				billed.Add(300)
			})
			body := `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`

			hammer(8, 25, func() {
				_, err := sendStatus(t, context.Background(), client, http.MethodPost, srv.URL, strings.NewReader(body))
				if err != nil && !errors.Is(err, ErrRateLimited) {
					t.Error(err)
				}
			})
			assert.LessOrEqual(t, billed.Load(), int64(c.cfg.TokensPerMinute), "tokens billed")
			assert.LessOrEqual(t, hits.Load(), int64(c.cfg.Burst), "requests")
			assert.Greater(t, hits.Load(), int64(10))
		})
	}
}

// hammer runs f rounds times in each of workers goroutines at once, and
// returns when all are done.
func hammer(workers, rounds int, f func()) {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				f()
			}
		}()
	}
	wg.Wait()
}

// takeTurn takes ks's turn as a request does: at once when the lane is
// open (takeFast), or in the queue (acquire).
func takeTurn(ctx context.Context, l *Limiter, ks *keyState, toks int64, now time.Time) (time.Time, error) {
	if _, ok := l.takeFast(ks, toks, now); ok {
		return now, nil
	}
	at, _, err := l.acquire(ctx, ks, toks, now)
	return at, err
}

// A 429's decrease races a request taking its turn without the key's
// mutex, at one frozen instant: the request that goes after the decrease
// must then wait the lowered rate's interval, whether the racing request
// counted as sent before the decrease or took the queue's path after it.
// So of the racing request and the one sent just after the decrease, one
// at most goes at that instant. Before lock waited for the turns taken
// through the lane, the decrease could read the last send before that
// request recorded its own, and both went at once in ~13% of the rounds.
func TestLimiterDecreaseRacingALaneTurnSpacesTheNextRequest(t *testing.T) {
	ctx := context.Background()
	both := 0
	for range 3000 {
		clk := newFakeClock(block)
		l := newOwnLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 100, MaxWait: -1}, clk)
		ks := limKey(t, l, "h", "m")
		sentAt := clk.Now()
		clk.Advance(time.Second)
		now := clk.Now()
		var ready, sent atomic.Int64
		start := func() { // both at once
			for ready.Add(1); ready.Load() < 2; {
			}
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			start()
			if _, err := takeTurn(ctx, l, ks, 0, now); err == nil {
				sent.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			start()
			l.slowDown(ctx, ks, now, sentAt) // the 429 to the request sent a second ago
			if _, err := takeTurn(ctx, l, ks, 0, now); err == nil {
				sent.Add(1)
			}
		}()
		wg.Wait()
		if sent.Load() > 1 {
			both++
		}
	}
	assert.Zero(t, both, "rounds of 3000 in which two requests went at the instant of the decrease")
}
