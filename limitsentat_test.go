package httpguard

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request counts as sent, for the adaptive rate, from before it asks a
// store the config names, not from its answer: a request the store let go
// at the rate before a decrease, its ask out across the network when the
// decrease came, met a server still full of the old rate's traffic, and
// its 429 is of the round the decrease already answered. Counted from
// after the ask, it cut the rate a second time for one round.
func TestLimiterCountsARequestAdmittedBeforeADecreaseInItsRound(t *testing.T) {
	clk := newFakeClock(block)
	store := &heldStore{s: newMemoryLimitStore(clk.Now), entered: make(chan struct{}), release: make(chan struct{})}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 2, MaxWait: 10 * time.Second, Store: store}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	})
	store.armed.Store(true)
	held := make(chan int, 1)
	go func() {
		code, err := getStatus(t, context.Background(), client, srv.URL)
		assert.NoError(t, err)
		held <- code
	}()
	<-store.entered // its ask is out, at 0
	clk.Advance(10 * time.Millisecond)
	code, err := getStatus(t, context.Background(), client, srv.URL) // its 429 cuts the rate, at 10 ms
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, code)
	require.EqualValues(t, 1, l.Stats().SlowDowns)

	close(store.release) // the store lets the first go, in the burst: its 429 comes after the cut
	require.Equal(t, http.StatusTooManyRequests, <-held)
	require.EqualValues(t, 2, hits.n.Load())
	assert.EqualValues(t, 1, l.Stats().SlowDowns, "one cut for the round")
}
