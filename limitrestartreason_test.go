package httpguard

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 429 that re-times the queue (see restart) keeps the reason of each
// place's wait: the bucket of the gap of the place ahead of it, as
// enqueue records it. At 1 request/s (Burst 5) and 6,000 tokens a minute,
// a request of 2,010 tokens queued for tokens and one of 18 tokens queued
// behind it, told it waited for the tokens bucket; a bare 429 then cut the
// rate, and the small request, woken to sleep again to its new place
// 21.5 s on, behind the same request of 2,010 tokens, was told it waited
// for the requests bucket.
func TestLimiterKeepsTheTokensBucketForAWaitBehindAQueueForTokensAfterACut(t *testing.T) {
	clk := newFakeClock(block)
	l, events := newTokenQueueLimiter(t, clk)
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			close(arrived)
			<-release
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte("ok"))
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the server closes
	post := func(maxTokens int) (int, error) {
		return sendStatus(t, context.Background(), client, http.MethodPost, srv.URL, strings.NewReader(chatBody("m", maxTokens)))
	}
	first := make(chan int, 1)
	go func() {
		status, _ := post(5000)
		first <- status
	}()
	<-arrived
	done := make(chan error, 2)
	go func() { _, err := post(2000); done <- err }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	go func() { _, err := post(10); done <- err }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 2 }, 5*time.Second, time.Millisecond)
	before := events.all()
	require.Equal(t, ThrottleTokens, before[len(before)-1].Reason, "the wait of the request queued behind, before the cut")
	seen := len(before)

	once.Do(func() { close(release) })
	require.Equal(t, http.StatusTooManyRequests, <-first)
	// Both woken by the cut, and asleep again at their new places.
	require.Eventually(t, func() bool {
		return len(events.all()) >= seen+3 && clk.Sleeping() == 2
	}, 5*time.Second, time.Millisecond)
	after := events.all()[seen:]
	waits := 0
	for _, e := range after {
		if e.Reason == ThrottleSlowDown {
			continue
		}
		waits++
		assert.False(t, e.Rejected)
		assert.Equal(t, ThrottleTokens, e.Reason, "a wait after the cut, of %v", e.Wait)
	}
	assert.Equal(t, 2, waits)

	clk.Advance(time.Minute)
	require.NoError(t, <-done)
	clk.Advance(time.Minute)
	require.NoError(t, <-done)
}
