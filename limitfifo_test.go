package httpguard

import (
	"context"
	"errors"
	"io"
	"net/http"
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
	clk.mu.Lock()
	asleep := make(map[chan struct{}]bool)
	for ch := range clk.waiters {
		asleep[ch] = true
	}
	clk.mu.Unlock()

	close(hold)
	require.NoError(t, <-first)
	// Every request asleep is woken: wait until none sleeps where it did.
	require.Eventually(t, func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		for ch := range clk.waiters {
			if asleep[ch] {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
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
	clk := newFakeClock(block)
	store := &gatedStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: 10 * time.Second, Store: store}, clk)
	hold := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-hold
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", "500ms")
		}
		io.WriteString(w, "ok")
	})
	start := clk.Now()
	first := make(chan error, 1)
	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		first <- err
	}()
	require.Eventually(t, func() bool { return hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	const queued = 3
	var done atomic.Int64
	for i := 1; i <= queued; i++ {
		go func() {
			defer done.Add(1)
			_, err := getStatus(t, context.Background(), client, srv.URL)
			assert.NoError(t, err)
		}()
		require.Eventually(t, func() bool { return clk.Sleeping() == i }, 5*time.Second, time.Millisecond)
	}
	store.armed.Store(true)
	clk.Advance(100 * time.Millisecond) // the first place: the store lets it go, and holds its answer
	<-store.entered
	clk.mu.Lock()
	asleep := make(map[chan struct{}]bool)
	for ch := range clk.waiters {
		asleep[ch] = true
	}
	clk.mu.Unlock()
	close(hold) // the window is spent until 500 ms: the queue moves behind it
	require.NoError(t, <-first)
	close(store.release)
	require.Eventually(t, func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		for ch := range clk.waiters {
			if asleep[ch] {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
	clk.Drive(t, queued, &done)

	var sent []time.Duration
	for _, at := range hits.Times() {
		sent = append(sent, at.Sub(start))
	}
	assert.Equal(t, []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, 600 * time.Millisecond}, sent)
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
