package httpguard

import (
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Limiter reads its clock once a request: the tokens an answer used
// below the estimate go back as of the last turn taken on the key (or
// debt added), with no second reading (a vDSO call of 30–80 ns on a
// virtual machine), and only those the bucket still owed then (see
// TestLimiterCreditAfterTheBucketRefilledGivesNothingBack).
func TestLimiterCreditsTheOverestimateWithoutReadingTheClock(t *testing.T) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 60_000})
	require.NoError(t, err)
	var reads atomic.Int32
	l.now, l.sleep = func() time.Time { reads.Add(1); return clk.Now() }, clk.Sleep
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(100, 50))
	limPostRead(t, client, srv.URL, limChatBody("m", 500, 4000)) // makes the key

	reads.Store(0)
	limPostRead(t, client, srv.URL, limChatBody("m", 500, 4000))

	assert.EqualValues(t, 1, reads.Load(), "readings of the clock for one request")
	assert.InDelta(t, 60_000-2*150, available(t, l, keyName(srv, "m")), 1e-6)
}

// Tokens an answer used above the estimate are taken as of when its usage
// is read: taken as of the request's turn, long past, they would fall
// into a bucket that has refilled since, and be lost.
func TestLimiterTakesTheUnderestimateAsOfTheUsage(t *testing.T) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 60_000}) // a token a millisecond
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	srv, client, _ := newLimitedServer(t, l, clk, limAnswerUsage(1000, 9000))

	resp := limPost(t, client, srv.URL, limChatBody("m", 500, 100))
	clk.Advance(30 * time.Second) // the answer took long: the bucket is full again
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	assert.InDelta(t, 60_000-(10_000-600), available(t, l, keyName(srv, "m")), 2)
}

// Corrections made as the Limiter makes them, a while after the turn
// their tokens were taken (credits as of the last turn taken or debt
// added, of what the bucket still owed then; debits now), never let the bucket take
// more than Burst plus its rate over any span of time, but for the one
// token gcra forgives a bucket full for less than an interval.
func TestMemoryLimitStoreCreditAsOfTheTurnKeepsTheRate(t *testing.T) {
	const rate, burst = 10, 50
	clk := newFakeClock(block)
	s := newMemoryLimitStore(clk.Now)
	none, tb := BucketLimit{}.bucket(), BucketLimit{Rate: rate, Burst: burst}.bucket()
	var hint stateHint
	rng := rand.New(rand.NewPCG(7, 11))
	type point struct {
		at   time.Time
		used int64 // tokens taken so far, net of the credits
	}
	var history []point
	var used int64
	// As the Limiter makes them (see tokenCorrection.asOf): a credit as
	// of the last turn taken or debt added, a debit now.
	last := int64(noEnd)
	for i := range 10_000 {
		n := int64(rng.IntN(10) + 1)
		at := clk.Now()
		wait, _, end, err := s.takeAt(at, "k", &hint, &none, &tb, n)
		require.NoError(t, err)
		if wait == 0 {
			used += n
			last = max(last, s.elapsed(at))
			for _, p := range history[max(len(history)-100, 0):] {
				allowed := burst + rate*at.Sub(p.at).Seconds() + 1
				require.LessOrEqual(t, float64(used-p.used), allowed, "step %d: %d tokens in %v", i, used-p.used, at.Sub(p.at))
			}
		}
		// The answer takes a while; now and then an idle span lets the
		// bucket fill.
		d := time.Duration(rng.IntN(300)) * time.Millisecond
		if rng.IntN(10) == 0 {
			d *= 20
		}
		clk.Advance(d)
		if wait == 0 { // the usage, from none to twice the estimate
			c := rng.Int64N(2*n+1) - n
			asOf := last
			if c > 0 {
				asOf = s.elapsed(clk.Now())
				last = asOf
			}
			s.adjust("k", &hint, &tb, c, end, asOf)
			used += c
		}
		history = append(history, point{clk.Now(), used})
	}
}
