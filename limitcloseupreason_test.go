package httpguard

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request given up in the middle of the queue hands the place behind it
// what it waited for, as it hands it its room (see closeUp). At 1
// request/s (Burst 5) and 6,000 tokens a minute, after a request of 5,010
// tokens, one of 2,010 queues for tokens; behind it one of 10 tokens
// (the requests bucket sets its gap), then another of 10, which waits
// for the requests bucket. When the first of 10 is cancelled, the second
// moves up behind the one of 2,010 and waits for its tokens:
// woken as that one goes, it told OnThrottle it waited 19.24s for the
// requests bucket.
func TestLimiterNamesTheBucketAheadOfAPlaceAGivenUpPlaceMovedUp(t *testing.T) {
	clk, events, post := newTokenQueue(t)
	done := make(chan error, 3)
	sleeping := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return clk.Sleeping() == n }, 5*time.Second, time.Millisecond)
	}
	go func() { done <- post(context.Background(), 2000) }()
	sleeping(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- post(ctx, 10) }()
	sleeping(2)
	go func() { done <- post(context.Background(), 10) }()
	sleeping(3)
	seen := events.all()
	require.Equal(t, ThrottleRequests, seen[len(seen)-1].Reason, "behind a request whose gap the requests bucket sets")

	cancel()
	require.Error(t, <-done)
	sleeping(2)
	clk.Advance(11 * time.Second) // the request of 2,010 tokens goes
	require.NoError(t, <-done)
	sleeping(1)
	seen = events.all()
	last := seen[len(seen)-1]
	t.Logf("the request moved up waits %v for the %s bucket", last.Wait, last.Reason)
	assert.False(t, last.Rejected)
	assert.Equal(t, ThrottleTokens, last.Reason, "behind the request of 2,010 tokens")

	clk.Advance(time.Minute)
	require.NoError(t, <-done)
}
