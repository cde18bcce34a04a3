package httpguard

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request whose place a rate cut takes out of the queue (its new slot
// beyond its MaxWait) while it asks a store the config names, and which
// the store lets go, is sent: the places behind it, which moved up into
// its slot, must still go a gap after it at the lowered rate. They went
// as if it had not been sent: 100 ms after it at a rate cut to 7/s. The
// place behind, a gap after it at 7/s, is beyond its own MaxWait now: it
// is refused.
func TestLimiterSpacesTheQueueAfterARequestRefusedWhileAskingTheStoreGoes(t *testing.T) {
	clk := newFakeClock(block)
	store := &gatedStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: 120 * time.Millisecond, Store: store}, clk)
	hold := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-hold
			w.WriteHeader(http.StatusTooManyRequests) // no Retry-After: the rate is cut, nothing paused
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

	var done atomic.Int64
	queue := func() {
		go func() {
			defer done.Add(1)
			if _, err := getStatus(t, context.Background(), client, srv.URL); err != nil {
				assert.ErrorIs(t, err, ErrRateLimited)
			}
		}()
	}
	queue() // at 0: its place at 100 ms, the latest it may go 120 ms
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	clk.Advance(90 * time.Millisecond)
	queue() // at 90 ms: its place at 200 ms, the latest 210 ms
	require.Eventually(t, func() bool { return clk.Sleeping() == 2 }, 5*time.Second, time.Millisecond)

	store.armed.Store(true)
	clk.Advance(10 * time.Millisecond) // the first place: the store lets it go, and holds its answer
	<-store.entered
	close(hold) // a 429: the rate goes to 7/s, and the queue restarts at 143 ms, beyond the first's 120 ms
	require.NoError(t, <-first)
	close(store.release)
	clk.Drive(t, 2, &done)

	var sent []time.Duration
	for _, at := range hits.Times() {
		sent = append(sent, at.Sub(start))
	}
	require.GreaterOrEqual(t, len(sent), 2)
	assert.Equal(t, 100*time.Millisecond, sent[1])
	// 1/7 s, less what the rate recovers by then.
	for i := 2; i < len(sent); i++ {
		assert.GreaterOrEqual(t, sent[i]-sent[i-1], 135*time.Millisecond, "sent at %v: the lowered rate spaces the requests", sent)
	}
}
