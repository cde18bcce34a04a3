package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A long answer whose usage comes in after the bucket has refilled its
// tokens: they are owed no more, and its credit gives nothing back. Before,
// the credit (29,000 tokens estimated, 150 used) was taken off the bucket's
// debt whatever had happened since: here another request had found the
// bucket full and taken 59,000 tokens, and the credit gave 28,850 of them
// back, so that a third request of 28,000 went at once, 87,000 tokens at
// one instant through a bucket of 60,000.
func TestLimiterCreditAfterTheBucketRefilledGivesNothingBack(t *testing.T) {
	clk, l, srv, client := newCreditRig(t, 59_000)

	a := limPost(t, client, srv.URL, limChatBody("m", 28_900, 100)) // A: ~29,000 tokens estimated
	clk.Advance(40 * time.Second)                                   // A streams on; the bucket refills
	limPostRead(t, client, srv.URL, limChatBody("m", 1, 58_999))    // B: the bucket, full, gives it 59,000
	io.Copy(io.Discard, a.Body)                                     // A's usage: 150
	a.Body.Close()

	assert.InDelta(t, 60_000-59_000, available(t, l, keyName(srv, "m")), 2, "B's tokens, taken a moment ago, are still owed")
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(limChatBody("m", 1, 27_999)))
	if err == nil {
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, ErrRateLimited, "a third request of 28,000 tokens at the same instant")
}

// A credit is what it would have been had the usage come in at the last
// turn taken on the key: then A's tokens still owed (28,000 of them, a
// second after A's turn) go back, and B's, stacked after them, move up.
// At A's usage, 40 s after its turn, A (150 used) and B (31,000) have long
// refilled: the bucket is full, as it would be had A asked for 150. A
// credit of only what the bucket still owed at the usage (nothing, by
// then) left B's tokens 28 s behind: 40,000 available.
func TestLimiterCreditCountsFromTheLastTurn(t *testing.T) {
	clk, l, srv, client := newCreditRig(t, 31_000)

	a := limPost(t, client, srv.URL, limChatBody("m", 28_900, 100)) // A: ~29,000 tokens estimated
	clk.Advance(time.Second)
	limPostRead(t, client, srv.URL, limChatBody("m", 1, 30_999)) // B: ~31,000
	clk.Advance(39 * time.Second)
	io.Copy(io.Discard, a.Body) // A's usage: 150
	a.Body.Close()

	assert.InDelta(t, 60_000, available(t, l, keyName(srv, "m")), 50)
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(limChatBody("m", 1, 58_999)))
	require.NoError(t, err, "a request of 59,000 tokens at once: the bucket is full")
	resp.Body.Close()
}

// newCreditRig is a Limiter of its own store, 60,000 tokens a minute (a
// token a millisecond), that waits for no turn, over a server that answers
// the first request (A) 150 tokens used and every later one (B) bUsed,
// all it asked for.
func newCreditRig(t *testing.T, bUsed int) (*fakeClock, *Limiter, *httptest.Server, *http.Client) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 60_000, MaxWait: -1})
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			limAnswerUsage(100, 50)(n, w, r)
			return
		}
		limAnswerUsage(bUsed, 0)(n, w, r)
	})
	return clk, l, srv, client
}
