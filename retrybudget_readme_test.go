package httpguard

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's figures for the retry budget, in the section "With the
// SDKs": a lone call that an SDK's own 2 retries send 3 times through a
// fresh Retrier into an outage (had the SDK ignored X-Should-Retry) sends
// 13 requests, not 3 × 6 = 18.
func TestRetryBudgetStopsALoneCallRetriedByAnSDKAtThirteenRequests(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	c := clientFor(t, r)
	sendN(t, c, s.URL, 3)
	t.Logf("a lone call, sent 3 times into an outage: %d requests", s.hits.Load())
	assert.EqualValues(t, 13, s.hits.Load())
}

// The README's figures for the retry budget, in "The retry budget": once
// an outage has spent the budget, the provider's successes earn the
// retries back, the first within 4 calls, five within 11 and the whole
// Burst within 18. The budget's arithmetic has no randomness: these are
// the exact figures.
func TestRetryBudgetEarnsItsRetriesBackAfterAnOutage(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := outageServer(t, &down)
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	c := clientFor(t, r)
	sendN(t, c, s.URL, 100)
	require.Less(t, r.budget.tokens.Load(), int64(unit), "the outage spent the budget")

	down.Store(false)
	within := map[int64]int{}
	for calls := 1; calls <= 30; calls++ {
		sendN(t, c, s.URL, 1)
		for _, retries := range []int64{1, 5, defaultBurst} {
			if within[retries] == 0 && r.budget.tokens.Load() >= retries*unit {
				within[retries] = calls
			}
		}
	}
	t.Logf("successes until the budget holds 1, 5 and %d retries: %d, %d, %d",
		defaultBurst, within[1], within[5], within[defaultBurst])
	assert.Equal(t, map[int64]int{1: 4, 5: 11, defaultBurst: 18}, within,
		"successes until 1, 5 and %d retries are earned back, as the README says", defaultBurst)
}
