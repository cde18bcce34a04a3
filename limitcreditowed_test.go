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

// creditStores are the stores a Limiter corrects a credit in: its own,
// and a TurnLimitStore the config names, which tells each turn's end.
var creditStores = []string{"its own store", "a store of the config"}

// A long answer whose usage comes in after the bucket has refilled its
// tokens: they are owed no more, and its credit gives nothing back. Before,
// the credit (29,000 tokens estimated, 150 used) was taken off the bucket's
// debt whatever had happened since: here another request had found the
// bucket full and taken 59,000 tokens, and the credit gave 28,850 of them
// back, so that a third request of 28,000 went at once, 87,000 tokens at
// one instant through a bucket of 60,000. A store the config named was
// given the whole credit through Adjust, which is not told the turn's end.
func TestLimiterCreditAfterTheBucketRefilledGivesNothingBack(t *testing.T) {
	for _, store := range creditStores {
		t.Run(store, func(t *testing.T) {
			clk, l, srv, client := newCreditRig(t, store, -1, 150, 59_000) // B used all it asked for

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
		})
	}
}

// A turn that waited for a bucket a queue keeps empty leaves it a whole
// burst behind: its tokens are owed for the burst's refill, a minute, not
// only for their own (30 s), and an answer 10 s later gives the whole
// overestimate back. A credit bounded by the tokens' own refill from the
// turn (a guess at the end by a Limiter its store does not tell it) gave
// back 20,000 of B's 29,000: a busy bucket, corrected that way, would
// count many times the tokens its requests used.
func TestLimiterCreditOfATurnThatWaitedGivesTheOverestimateBack(t *testing.T) {
	for _, store := range creditStores {
		t.Run(store, func(t *testing.T) {
			clk, l, srv, client := newCreditRig(t, store, time.Minute, 59_000, 1_000)
			limPostRead(t, client, srv.URL, limChatBody("m", 1, 58_999)) // A: 59,000, all used

			b := limPost(t, client, srv.URL, limChatBody("m", 1, 29_999)) // B: 30,000, waits 29 s
			clk.Advance(10 * time.Second)
			io.Copy(io.Discard, b.Body) // B's usage: 1,000
			b.Body.Close()

			// B left the bucket a minute behind its turn; 10 s on, its
			// credit of 29,000 takes that to 21 s: 39,000 tokens.
			assert.InDelta(t, 39_000, available(t, l, keyName(srv, "m")), 2)
		})
	}
}

// A credit is what it would have been had the usage come in at the last
// turn taken on the key: then A's tokens still owed (28,000 of them, a
// second after A's turn) go back, and B's, stacked after them, move up.
// At A's usage, 40 s after its turn, A (150 used) and B (31,000) have long
// refilled: the bucket is full, as it would be had A asked for 150. A
// credit of only what the bucket still owed at the usage (nothing, by
// then) left B's tokens 28 s behind: 40,000 available. (A store the
// config names, which knows no turn of the Limiter's, bounds a credit by
// what it still owes at the credit.)
func TestLimiterCreditCountsFromTheLastTurn(t *testing.T) {
	clk, l, srv, client := newCreditRig(t, creditStores[0], -1, 150, 31_000)

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

// newCreditRig is a Limiter on store (one of creditStores), 60,000 tokens
// a minute (a token a millisecond), waiting maxWait at most, over a server
// whose answer to the i-th request reports used[i-1] tokens used, or the
// last of used.
func newCreditRig(t *testing.T, store string, maxWait time.Duration, used ...int) (*fakeClock, *Limiter, *httptest.Server, *http.Client) {
	clk := newFakeClock(moveOn)
	c := LimitConfig{TokensPerMinute: 60_000, MaxWait: maxWait}
	var l *Limiter
	if store == creditStores[0] {
		l = newOwnLimiter(t, c, clk)
	} else {
		l = newTestLimiter(t, c, clk)
		require.NotNil(t, l.turns, "the store tells the turns' ends")
	}
	srv, client, _ := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, r *http.Request) {
		limAnswerUsage(used[min(int(n), len(used))-1], 0)(n, w, r)
	})
	return clk, l, srv, client
}
