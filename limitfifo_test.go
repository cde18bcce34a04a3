package httpguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Requests queued on a key keep their order when a server pause or a
// lowered rate moves the queue: the queue is taken again in the order the
// requests queued, so that those that waited longest go first, and under a
// tight MaxWait the ones refused are the last to have come. They used to
// queue again in the order the scheduler woke them: a request queued first
// could take the last place and be refused, beyond its MaxWait, while one
// that came after it went.
//
// Eight requests queue 10 ms apart (MaxWait 1 s, 10 requests/s, so each
// may go until 1.01 s, 1.02 s, ... 1.08 s after the first was sent) behind
// a first request, whose answer, 80 ms in, pauses the key until 720 ms, or
// lowers its rate to 7/s, or does both, pausing it until 780 ms. The
// places are then at 720, 820, 920, 1020 ms, and the next beyond what any
// may wait (a pause); from 143 ms, 130 ms apart or less as the rate
// recovers, all within (a slow-down); at 780, 889, 995 ms, then 1100 ms,
// beyond (both).
func TestLimiterKeepsTheQueueOrderWhenAPauseOrASlowDownMovesIt(t *testing.T) {
	for _, signal := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		served int // of the queued requests, the first served, in order
	}{
		{"a window reported spent", func(w http.ResponseWriter) {
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", "720ms") // from when it was sent
			io.WriteString(w, "ok")
		}, 4},
		{"a 429 with Retry-After", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After-Ms", "700") // from now, 80 ms in
			w.WriteHeader(http.StatusTooManyRequests)
		}, 3},
		{"a bare 429", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusTooManyRequests)
		}, 8},
	} {
		for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
			"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
		} {
			t.Run(signal.name+"/"+name, func(t *testing.T) {
				served, refused := runQueueRetimed(t, newLimiter, signal.answer)
				const queued = 8
				want := make([]int, queued)
				for i := range want {
					want[i] = i + 1
				}
				assert.Equal(t, want[:signal.served], served, "served, in this order")
				assert.Equal(t, want[signal.served:], refused, "refused")
			})
		}
	}
}

// runQueueRetimed queues 8 requests, numbered from 1 in the order they
// queue, 10 ms apart, behind a first request whose answer is answer, and
// returns the numbers of those served, in the order they were, and of
// those refused with ErrRateLimited.
func runQueueRetimed(t *testing.T, newLimiter func(*testing.T, LimitConfig, *fakeClock) *Limiter, answer func(w http.ResponseWriter)) (served, refused []int) {
	const queued = 8
	clk := newFakeClock(block)
	l := newLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Second}, clk)
	hold := make(chan struct{})
	var mu sync.Mutex
	refused = []int{}
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-hold
			answer(w)
			return
		}
		mu.Lock()
		served = append(served, atoiOr(r.Header.Get("X-Seq"), -1))
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	send := func(seq int) error {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		req.Header.Set("X-Seq", strconv.Itoa(seq))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}

	first := make(chan error, 1)
	go func() { first <- send(0) }()
	require.Eventually(t, func() bool { return hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	errs := make([]error, queued+1)
	var done atomic.Int64
	for seq := 1; seq <= queued; seq++ {
		clk.Advance(10 * time.Millisecond)
		go func() {
			defer done.Add(1)
			errs[seq] = send(seq)
		}()
		require.Eventually(t, func() bool { return clk.Sleeping() == seq }, 5*time.Second, time.Millisecond, "request %d queues", seq)
	}
	woken := allWoken(clk)
	close(hold)
	require.NoError(t, <-first)
	// Every request asleep is woken: wait until none sleeps where it did.
	require.Eventually(t, woken, 5*time.Second, time.Millisecond)
	clk.Drive(t, queued, &done)

	for seq := 1; seq <= queued; seq++ {
		if err := errs[seq]; err != nil {
			require.ErrorIs(t, err, ErrRateLimited, "request %d", seq)
			var le *LimitError
			require.True(t, errors.As(err, &le), "request %d: %v", seq, err)
			refused = append(refused, seq)
		}
	}
	assert.Zero(t, clk.Sleeping())
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(served), refused
}

func atoiOr(s string, or int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return or
}

// A request whose place a pause moves while it asks a store the config
// names (the key's lock let go), and which the store lets go, leaves no
// hole in the queue: the places behind it move up to the one it was
// given, as they would have had it gone just before the pause. They went
// a gap later, the queue idle for the place nobody took.
func TestLimiterLeavesNoHoleWhenARequestMovedWhileAskingTheStoreGoes(t *testing.T) {
	g := newGatedRig(t, 10*time.Second, func(w http.ResponseWriter) {
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		w.Header().Set("X-Ratelimit-Reset-Requests", "500ms")
	})
	const queued = 3
	for i := 1; i <= queued; i++ {
		g.queue(t, func(err error) { assert.NoError(t, err) })
		require.Eventually(t, func() bool { return g.clk.Sleeping() == i }, 5*time.Second, time.Millisecond)
	}
	g.store.armed.Store(true)
	g.clk.Advance(100 * time.Millisecond) // the first place: the store lets it go, and holds its answer
	<-g.store.entered
	woken := allWoken(g.clk)
	close(g.hold) // the window is spent until 500 ms: the queue moves behind it
	require.NoError(t, <-g.first)
	close(g.store.release)
	require.Eventually(t, woken, 5*time.Second, time.Millisecond)
	g.clk.Drive(t, queued, &g.done)

	assert.Equal(t, []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, 600 * time.Millisecond}, g.sent())
}

// A request whose place a rate cut takes out of the queue (its new slot
// beyond its MaxWait) while it asks a store the config names, and which
// the store lets go, is sent: the places behind it, which moved up into
// its slot, must still go a gap after it at the lowered rate. They went
// as if it had not been sent: 100 ms after it at a rate cut to 7/s. The
// place behind, a gap after it at 7/s, is beyond its own MaxWait now: it
// is refused.
func TestLimiterSpacesTheQueueAfterARequestRefusedWhileAskingTheStoreGoes(t *testing.T) {
	g := newGatedRig(t, 120*time.Millisecond, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusTooManyRequests) // no Retry-After: the rate is cut, nothing paused
	})
	refusedOrSent := func(err error) {
		if err != nil {
			assert.ErrorIs(t, err, ErrRateLimited)
		}
	}
	g.queue(t, refusedOrSent) // at 0: its place at 100 ms, the latest it may go 120 ms
	require.Eventually(t, func() bool { return g.clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	g.clk.Advance(90 * time.Millisecond)
	g.queue(t, refusedOrSent) // at 90 ms: its place at 200 ms, the latest 210 ms
	require.Eventually(t, func() bool { return g.clk.Sleeping() == 2 }, 5*time.Second, time.Millisecond)

	g.store.armed.Store(true)
	g.clk.Advance(10 * time.Millisecond) // the first place: the store lets it go, and holds its answer
	<-g.store.entered
	close(g.hold) // a 429: the rate goes to 7/s, and the queue restarts at 143 ms, beyond the first's 120 ms
	require.NoError(t, <-g.first)
	close(g.store.release)
	g.clk.Drive(t, 2, &g.done)

	sent := g.sent()
	require.GreaterOrEqual(t, len(sent), 2)
	assert.Equal(t, 100*time.Millisecond, sent[1])
	// 1/7 s, less what the rate recovers by then.
	for i := 2; i < len(sent); i++ {
		assert.GreaterOrEqual(t, sent[i]-sent[i-1], 135*time.Millisecond, "sent at %v: the lowered rate spaces the requests", sent)
	}
}

// gatedRig is a Limiter (10 requests/s, Burst 1) on a gatedStore its
// config names, in front of a server that holds the first request until
// hold is closed and then answers it with answer; that first request is
// sent, and has reached the server, when newGatedRig returns.
type gatedRig struct {
	clk    *fakeClock
	store  *gatedStore
	srv    *httptest.Server
	client *http.Client
	hits   *arrivals
	start  time.Time
	hold   chan struct{}
	first  chan error   // the first request's end
	done   atomic.Int64 // how many of the requests queue sent have ended
}

func newGatedRig(t *testing.T, maxWait time.Duration, answer func(w http.ResponseWriter)) *gatedRig {
	t.Helper()
	clk := newFakeClock(block)
	g := &gatedRig{clk: clk, hold: make(chan struct{}), first: make(chan error, 1),
		store: &gatedStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), entered: make(chan struct{}), release: make(chan struct{})}}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: maxWait, Store: g.store}, clk)
	g.srv, g.client, g.hits = newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-g.hold
			answer(w)
		}
		io.WriteString(w, "ok")
	})
	g.start = clk.Now()
	go func() {
		_, err := getStatus(t, context.Background(), g.client, g.srv.URL)
		g.first <- err
	}()
	require.Eventually(t, func() bool { return g.hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	return g
}

// queue sends a request in the background, its error to check, and counts
// it in done once it ends.
func (g *gatedRig) queue(t *testing.T, check func(error)) {
	go func() {
		defer g.done.Add(1)
		_, err := getStatus(t, context.Background(), g.client, g.srv.URL)
		check(err)
	}()
}

// sent returns when each request reached the server, from the first's
// start.
func (g *gatedRig) sent() []time.Duration {
	var sent []time.Duration
	for _, at := range g.hits.Times() {
		sent = append(sent, at.Sub(g.start))
	}
	return sent
}

// allWoken returns a condition, for require.Eventually, that holds once
// none of the requests asleep on clk now sleeps where it did: each has
// been woken (and may sleep again, elsewhere).
func allWoken(clk *fakeClock) func() bool {
	clk.mu.Lock()
	asleep := make(map[chan struct{}]bool)
	for ch := range clk.waiters {
		asleep[ch] = true
	}
	clk.mu.Unlock()
	return func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		for ch := range clk.waiters {
			if asleep[ch] {
				return false
			}
		}
		return true
	}
}

// gatedStore is a MemoryLimitStore whose next turn, once armed, is taken
// and then held until release, its taker's key lock let go.
type gatedStore struct {
	*MemoryLimitStore
	armed            atomic.Bool
	entered, release chan struct{}
}

func (g *gatedStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	wait, by, _, err := g.TakeTurn(ctx, key, reqs, toks, n)
	return wait, by, err
}

func (g *gatedStore) TakeTurn(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, int64, error) {
	wait, by, end, err := g.MemoryLimitStore.TakeTurn(ctx, key, reqs, toks, n)
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return wait, by, end, err
}
