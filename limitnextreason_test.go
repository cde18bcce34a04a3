package httpguard

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A request that finds nobody queued but the key's next turn still ahead
// waits for the bucket that spaced that turn from the last request sent,
// and is told so. At 1 request/s (Burst 5) and 6,000 tokens a minute,
// after a request of 5,010 tokens, one of 2,010 queues for tokens and
// goes; a request of 10 tokens that can wait 100 ms then was refused "by
// the requests bucket: the turn is 19.24s away", a bucket with room (it
// had refilled its Burst of 5): its turn is the 2,010 tokens' gap away,
// and one that could wait was told it waited for the requests bucket
// too.
func TestLimiterNamesTheTokensBucketForAWaitBehindTheLastRequestSent(t *testing.T) {
	clk, events, post := newTokenQueue(t)
	done := make(chan error, 1)
	go func() { done <- post(context.Background(), 2000) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	clk.Advance(11 * time.Second) // it goes
	require.NoError(t, <-done)

	assertWaitsNameTokens(t, clk, events, post, done, 1)
	clk.Advance(time.Minute)
	require.NoError(t, <-done)
}
