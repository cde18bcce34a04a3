package httpguard

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldStore is a LimitStore (not a TurnLimitStore, nor adaptive) whose
// next Take, once armed, waits for release before it asks the memory
// store: its caller's key lock is let go meanwhile, as across a network.
type heldStore struct {
	s                *MemoryLimitStore
	armed            atomic.Bool
	entered, release chan struct{}
}

func (h *heldStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	if h.armed.CompareAndSwap(true, false) {
		h.entered <- struct{}{}
		<-h.release
	}
	return h.s.Take(ctx, key, reqs, toks, n)
}

func (h *heldStore) Pause(ctx context.Context, key string, d time.Duration) error {
	return h.s.Pause(ctx, key, d)
}

func (h *heldStore) Adjust(ctx context.Context, key string, toks BucketLimit, n int64) error {
	return h.s.Adjust(ctx, key, toks, n)
}

// Was a bug: two places asking the store at once (the first one's ask
// still out across the network when the second one's time came, or its
// timer late) could leave a hole of one gap in the queue. The second went
// first; the store then told the first to wait a gap, and the whole queue
// moved back by how late the first now was, two gaps, though the second
// had taken one of them: the places behind it went a gap later than the
// rate allows, the queue idle for it. The places behind now move back
// only as far as the first's new place needs.
func TestLimiterLeavesNoHoleWhenTwoPlacesAskTheStoreAtOnce(t *testing.T) {
	clk := newFakeClock(block)
	store := &heldStore{s: newMemoryLimitStore(clk.Now), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: 10 * time.Second, Store: store}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	start := clk.Now()
	code, err := getStatus(t, context.Background(), client, srv.URL) // the burst, at 0
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)

	const queued = 4 // places at 100, 200, 300 and 400 ms
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
	clk.Advance(100 * time.Millisecond) // the first place asks; its ask is held
	<-store.entered
	clk.Advance(100 * time.Millisecond) // the second place's time: it asks, and goes
	require.Eventually(t, func() bool { return hits.n.Load() == 2 }, 5*time.Second, time.Millisecond)
	close(store.release) // the store tells the first to wait a gap
	clk.Drive(t, queued, &done)

	var sent []time.Duration
	for _, at := range hits.Times() {
		sent = append(sent, at.Sub(start))
	}
	assert.Equal(t, []time.Duration{0, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}, sent)
}
