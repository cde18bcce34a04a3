package storetest

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// LimitStore checks that the stores newStore makes behave as an
// httpguard.LimitStore must. newStore is called once per subtest and must
// return an empty store (for a shared store: one whose keys no other test
// uses). The suite runs on the store's own clock, with waits of tens of
// milliseconds, so a store on a real server (Redis) runs it as it is.
//
// A store with a Len() int method, reporting the keys it holds, is also
// checked for dropping the state of idle keys; one that implements
// httpguard.AdaptiveLimitStore, for keeping the adaptive rate; one that
// implements httpguard.TurnLimitStore, for crediting only what a turn
// still owes; one that implements httpguard.AheadLimitStore, for taking
// turns ahead of their time and no further.
func LimitStore(t *testing.T, newStore func(t *testing.T) httpguard.LimitStore) {
	for _, c := range []struct {
		name string
		test func(*testing.T, httpguard.LimitStore)
	}{
		{"TakesABurstThenSaysWhen", limitTakesABurstThenSaysWhen},
		{"TakesTokensThenSaysWhen", limitTakesTokensThenSaysWhen},
		{"RefusedTakesTakeNothing", limitRefusedTakesTakeNothing},
		{"TakesBothBucketsOrNeither", limitTakesBothBucketsOrNeither},
		{"WaitsForBothBuckets", limitWaitsForBothBuckets},
		{"NeverTakesMoreThanBurstAndRateAllow", limitNeverTakesMoreThanBurstAndRateAllow},
		{"FollowsTheLimitPassed", limitFollowsTheLimitPassed},
		{"ZeroLimitsAreNoLimits", limitZeroLimitsAreNoLimits},
		{"RatesAboveATokenANanosecondStillLimit", limitRatesAboveATokenANanosecondStillLimit},
		{"PausesAKeyAndALaterPauseWins", limitPausesAKeyAndALaterPauseWins},
		{"CreditsWithinBurst", limitCreditsWithinBurst},
		{"DebitsWithinOneBurstOfDebt", limitDebitsWithinOneBurstOfDebt},
		{"DebitsNeverGiveBack", limitDebitsNeverGiveBack},
		{"DebitsRacingTakesLoseNoTake", limitDebitsRacingTakesLoseNoTake},
		{"CreditsRacingTakesLoseNoTake", limitCreditsRacingTakesLoseNoTake},
		{"KeepsKeysApart", limitKeepsKeysApart},
		{"ForgetsIdleState", limitForgetsIdleState},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, newStore(t)) })
	}
	for _, c := range []struct {
		name string
		test func(*testing.T, httpguard.AdaptiveLimitStore)
	}{
		{"AdaptiveRateStartsWithNoDecrease", adaptiveStartsWithNoDecrease},
		{"SlowsDownOncePerRound", adaptiveSlowsDownOncePerRound},
		{"SlowsDownFromTheRateAccepted", adaptiveSlowsDownFromTheRateAccepted},
		{"ToleratesAShareOf429s", adaptiveToleratesAShareOf429s},
		{"ForgetsTheShareOfAChanceCut", adaptiveForgetsTheShareOfAChanceCut},
		{"KeepsTheShareOfACutSoonAfterAnother", adaptiveKeepsTheShareOfACutSoonAfterAnother},
		{"RefusesABadSlowDown", adaptiveRefusesABadSlowDown},
		{"TakeReadsTheDecrease", adaptiveTakeReadsTheDecrease},
		{"JudgesTheRequestsOfTheLastSecond", adaptiveJudgesTheRequestsOfTheLastSecond}, // sleeps 1.2s: last
	} {
		t.Run(c.name, func(t *testing.T) {
			s, ok := newStore(t).(httpguard.AdaptiveLimitStore)
			if !ok {
				return // not an AdaptiveLimitStore: nothing to check
			}
			c.test(t, s)
		})
	}
	for _, c := range []struct {
		name string
		test func(*testing.T, httpguard.TurnLimitStore)
	}{
		{"CreditsNothingOfTokensRefilled", turnCreditsNothingOfTokensRefilled},
		{"CreditsATurnBehindOthersWhole", turnCreditsATurnBehindOthersWhole},
		{"CreditsATurnOfNoEndWhole", turnCreditsATurnOfNoEndWhole},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, ok := newStore(t).(httpguard.TurnLimitStore)
			if !ok {
				t.Skip("not an httpguard.TurnLimitStore")
			}
			c.test(t, s)
		})
	}
	for _, c := range []struct {
		name string
		test func(*testing.T, httpguard.AheadLimitStore)
	}{
		{"TakesATurnDueWithinAhead", aheadTakesATurnDueWithinAhead},
		{"TakesTokensAheadBothOrNeither", aheadTakesTokensBothOrNeither},
		{"TakesNothingAheadOfAPause", aheadTakesNothingAheadOfAPause},
		{"AheadNeverTakesMoreThanBurstAndRateAllow", aheadNeverTakesMoreThanBurstAndRateAllow},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, ok := newStore(t).(httpguard.AheadLimitStore)
			if !ok {
				t.Skip("not an httpguard.AheadLimitStore")
			}
			c.test(t, s)
		})
	}
}

// Limits of the suite. A slow bucket refills nothing that matters during a
// subtest; a fast one refills within its tens of milliseconds.
var (
	slowRequests = httpguard.BucketLimit{Rate: 1, Burst: 1}
	slowTokens   = httpguard.BucketLimit{Rate: 1, Burst: 100}
	fiveRequests = httpguard.BucketLimit{Rate: 5, Burst: 3}      // a turn every 200ms
	fastRequests = httpguard.BucketLimit{Rate: 100, Burst: 2}    // a turn every 10ms
	fastTokens   = httpguard.BucketLimit{Rate: 1000, Burst: 100} // 100 tokens every 100ms
	noLimit      = httpguard.BucketLimit{}
)

// take calls s.Take, failing the test on an error.
func take(t *testing.T, s httpguard.LimitStore, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason) {
	t.Helper()
	wait, by, err := s.Take(context.Background(), key, reqs, toks, n)
	require.NoError(t, err)
	require.GreaterOrEqual(t, wait, time.Duration(0))
	return wait, by
}

// takeNow asserts that s.Take succeeds at once.
func takeNow(t *testing.T, s httpguard.LimitStore, key string, reqs, toks httpguard.BucketLimit, n int64, msgAndArgs ...any) {
	t.Helper()
	wait, _ := take(t, s, key, reqs, toks, n)
	require.Zero(t, wait, msgAndArgs...)
}

// eventuallyTakes asserts that s.Take succeeds within a second.
func eventuallyTakes(t *testing.T, s httpguard.LimitStore, key string, reqs, toks httpguard.BucketLimit, n int64, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		wait, _, err := s.Take(context.Background(), key, reqs, toks, n)
		return err == nil && wait == 0
	}, time.Second, time.Millisecond, msg)
}

func limitTakesABurstThenSaysWhen(t *testing.T, s httpguard.LimitStore) {
	for i := range fiveRequests.Burst {
		takeNow(t, s, "k", fiveRequests, noLimit, 0, "burst request %d", i+1)
	}

	wait, by := take(t, s, "k", fiveRequests, noLimit, 0)

	assert.Equal(t, httpguard.ThrottleRequests, by)
	assert.Greater(t, wait, time.Duration(0))
	assert.LessOrEqual(t, wait, 200*time.Millisecond, "one turn is 1/5 s")
	time.Sleep(wait)
	takeNow(t, s, "k", fiveRequests, noLimit, 0, "the turn came when the store said")
}

func limitTakesTokensThenSaysWhen(t *testing.T, s httpguard.LimitStore) {
	takeNow(t, s, "k", noLimit, fastTokens, 100)

	wait, by := take(t, s, "k", noLimit, fastTokens, 40)

	assert.Equal(t, httpguard.ThrottleTokens, by)
	assert.Greater(t, wait, 20*time.Millisecond)
	assert.LessOrEqual(t, wait, 40*time.Millisecond, "40 tokens at 1,000 a second")
	time.Sleep(wait)
	takeNow(t, s, "k", noLimit, fastTokens, 40, "the tokens came when the store said")
}

func limitRefusedTakesTakeNothing(t *testing.T, s httpguard.LimitStore) {
	takeNow(t, s, "k", slowRequests, noLimit, 0)
	first, _ := take(t, s, "k", slowRequests, noLimit, 0)
	require.Greater(t, first, time.Duration(0))

	second, _ := take(t, s, "k", slowRequests, noLimit, 0)

	assert.LessOrEqual(t, second, first, "a refused take did not queue behind the first")
}

func limitTakesBothBucketsOrNeither(t *testing.T, s httpguard.LimitStore) {
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 2}
	takeNow(t, s, "tokens short", reqs, slowTokens, 100)

	_, by := take(t, s, "tokens short", reqs, slowTokens, 50)
	require.Equal(t, httpguard.ThrottleTokens, by)
	takeNow(t, s, "tokens short", reqs, noLimit, 0, "the take the tokens refused left its request")

	takeNow(t, s, "requests short", slowRequests, slowTokens, 10)
	_, by = take(t, s, "requests short", slowRequests, slowTokens, 10)
	require.Equal(t, httpguard.ThrottleRequests, by)
	takeNow(t, s, "requests short", noLimit, slowTokens, 90, "the take the requests refused left its tokens")
}

// A take both buckets refuse waits for both: its wait is the longer one.
// A Limiter told the shorter would ask again then, only to be refused by
// the other bucket.
func limitWaitsForBothBuckets(t *testing.T, s httpguard.LimitStore) {
	reqs := httpguard.BucketLimit{Rate: 5, Burst: 1}
	takeNow(t, s, "k", reqs, slowTokens, 100)

	wait, _ := take(t, s, "k", reqs, slowTokens, 50)

	assert.Greater(t, wait, 49*time.Second, "50 tokens at 1 a second, though the next request is due in 200ms")
	assert.LessOrEqual(t, wait, 50*time.Second)
}

func limitNeverTakesMoreThanBurstAndRateAllow(t *testing.T, s httpguard.LimitStore) {
	// minTakes takes per goroutine, whatever the time, are enough to empty
	// both bursts: on a loaded machine a goroutine may start only after
	// stop, and the burst must still be seen taken.
	const goroutines, n, minTakes = 8, 5, 5
	var requests, tokens atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(100 * time.Millisecond)
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < minTakes || time.Now().Before(stop); j++ {
				// Half the goroutines take requests, half tokens.
				key, reqs, toks, k, count := "requests", fastRequests, noLimit, int64(0), &requests
				if i%2 == 1 {
					key, reqs, toks, k, count = "tokens", noLimit, fastTokens, n, &tokens
				}
				wait, _, err := s.Take(context.Background(), key, reqs, toks, k)
				if !assert.NoError(t, err) {
					return
				}
				if wait == 0 {
					count.Add(max(k, 1))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	// One turn more than GCRA's burst + rate·elapsed: a store may let a
	// turn taken a moment late keep its place (MemoryLimitStore does).
	assert.LessOrEqual(t, float64(requests.Load()), float64(fastRequests.Burst)+fastRequests.Rate*elapsed+1)
	assert.GreaterOrEqual(t, requests.Load(), fastRequests.Burst, "the burst at least")
	assert.LessOrEqual(t, float64(tokens.Load()), float64(fastTokens.Burst)+fastTokens.Rate*elapsed+n)
	assert.GreaterOrEqual(t, tokens.Load(), fastTokens.Burst, "the burst at least")
}

func limitFollowsTheLimitPassed(t *testing.T, s httpguard.LimitStore) {
	fast := httpguard.BucketLimit{Rate: 1000, Burst: 1}
	slow := httpguard.BucketLimit{Rate: 5, Burst: 1}
	takeNow(t, s, "k", fast, noLimit, 0)
	eventuallyTakes(t, s, "k", slow, noLimit, 0, "the next turn at 1,000 a second")
	took := time.Now()

	wait, by := take(t, s, "k", slow, noLimit, 0)

	// At 5 a second the turn after comes 200 ms after the one taken, less
	// the time this goroutine took to ask (long on a loaded machine); at
	// 1,000 a second it would come within 1 ms.
	assert.Equal(t, httpguard.ThrottleRequests, by)
	assert.Greater(t, wait, 150*time.Millisecond-time.Since(took), "the turn after, at 5 a second")
	assert.LessOrEqual(t, wait, 200*time.Millisecond)
}

func limitZeroLimitsAreNoLimits(t *testing.T, s httpguard.LimitStore) {
	for range 100 {
		takeNow(t, s, "k", noLimit, noLimit, 0)
		takeNow(t, s, "k", noLimit, slowTokens, 0, "no tokens asked")
	}
}

// limitRatesAboveATokenANanosecondStillLimit guards httpguard.BucketLimit's
// promise that a Rate above 1e9 (+Inf included) refills at 1e9 tokens a
// second: a refill time rounded to zero would be no limit at all, and a
// bucket of 1e9 tokens would give another burst at once, and another.
func limitRatesAboveATokenANanosecondStillLimit(t *testing.T, s httpguard.LimitStore) {
	for _, c := range []struct {
		key  string
		rate float64
	}{{"3e9", 3e9}, {"inf", math.Inf(1)}} {
		toks := httpguard.BucketLimit{Rate: c.rate, Burst: 1_000_000_000} // a second's refill at 1e9 a second
		takeNow(t, s, c.key, noLimit, toks, toks.Burst, "rate %v: the first burst", c.rate)

		wait, by := take(t, s, c.key, noLimit, toks, toks.Burst)

		assert.Equal(t, httpguard.ThrottleTokens, by, "rate %v", c.rate)
		assert.Greater(t, wait, 500*time.Millisecond, "rate %v: another burst refills in a second at 1e9 tokens a second", c.rate)
		assert.LessOrEqual(t, wait, time.Second, "rate %v", c.rate)
	}
}

func limitPausesAKeyAndALaterPauseWins(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	require.NoError(t, s.Pause(ctx, "k", 60*time.Millisecond))
	wait, by := take(t, s, "k", slowRequests, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by)
	assert.Greater(t, wait, 30*time.Millisecond)
	assert.LessOrEqual(t, wait, 60*time.Millisecond)
	// A Limiter without a request limit (tokens only, or the zero
	// LimitConfig, which still follows the server) is paused too.
	for _, toks := range []httpguard.BucketLimit{noLimit, slowTokens} {
		wait, by = take(t, s, "k", noLimit, toks, min(toks.Burst, 1))
		assert.Equal(t, httpguard.ThrottlePaused, by, "a take with no request limit, tokens %+v", toks)
		assert.Greater(t, wait, time.Duration(0), "a take with no request limit, tokens %+v", toks)
	}

	require.NoError(t, s.Pause(ctx, "k", 5*time.Millisecond))
	wait, _ = take(t, s, "k", slowRequests, noLimit, 0)
	assert.Greater(t, wait, 20*time.Millisecond, "an earlier end does not shorten the pause")

	require.NoError(t, s.Pause(ctx, "k", 150*time.Millisecond))
	wait, by = take(t, s, "k", slowRequests, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by)
	assert.Greater(t, wait, 100*time.Millisecond, "a later end wins")
	assert.LessOrEqual(t, wait, 150*time.Millisecond)

	eventuallyTakes(t, s, "k", slowRequests, noLimit, 0, "the pause ends")
	wait, _ = take(t, s, "k", slowRequests, noLimit, 0)
	assert.Greater(t, wait, 500*time.Millisecond, "the first take after the pause got the one turn: the refused ones took none")
}

func limitCreditsWithinBurst(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	takeNow(t, s, "spent", noLimit, slowTokens, 100)
	require.NoError(t, s.Adjust(ctx, "spent", slowTokens, -30))
	takeNow(t, s, "spent", noLimit, slowTokens, 30, "the credit is there to take")
	_, by := take(t, s, "spent", noLimit, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "and no more")

	require.NoError(t, s.Adjust(ctx, "full", slowTokens, -50))
	takeNow(t, s, "full", noLimit, slowTokens, 100)
	_, by = take(t, s, "full", noLimit, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "a full bucket holds Burst, credit or not")

	takeNow(t, s, "huge", noLimit, slowTokens, 100)
	require.NoError(t, s.Adjust(ctx, "huge", slowTokens, math.MinInt64))
	takeNow(t, s, "huge", noLimit, slowTokens, 100, "the largest credit fills the bucket")
	_, by = take(t, s, "huge", noLimit, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "and no more")
}

func limitDebitsWithinOneBurstOfDebt(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	require.NoError(t, s.Adjust(ctx, "debit", slowTokens, 40))
	_, by := take(t, s, "debit", noLimit, slowTokens, 61)
	assert.Equal(t, httpguard.ThrottleTokens, by)
	takeNow(t, s, "debit", noLimit, slowTokens, 60, "the debit took 40 of the 100")

	for range 3 {
		require.NoError(t, s.Adjust(ctx, "absurd", slowTokens, 1<<40))
	}
	wait, by := take(t, s, "absurd", noLimit, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by)
	assert.Greater(t, wait, 99*time.Second)
	assert.LessOrEqual(t, wait, 101*time.Second, "a debt of one burst at most: 101 tokens at 1 a second")
}

// A debit passed a smaller burst than the bucket's debt (the Limiter of a
// process configured lower, during a rolling deploy; a share that shrank)
// stops at that debt: it takes nothing more, and gives nothing back.
func limitDebitsNeverGiveBack(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	takeNow(t, s, "k", noLimit, slowTokens, 100)
	require.NoError(t, s.Adjust(ctx, "k", httpguard.BucketLimit{Rate: 1, Burst: 10}, 5))

	wait, by := take(t, s, "k", noLimit, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "the 100 tokens taken are still taken")
	assert.Greater(t, wait, 500*time.Millisecond, "a token at 1 a second")
}

// limitDebitsRacingTakesLoseNoTake debits a key's tokens while its tokens
// are taken, as a Limiter corrects estimates while other requests start: a
// debit only ever takes more, so the takes never pass what the bucket
// allows. An Adjust that read the bucket before takes and wrote it after
// would lose them, and let as many more through.
func limitDebitsRacingTakesLoseNoTake(t *testing.T, s httpguard.LimitStore) {
	correctionsRacingTakes(t, s, 1)
}

// limitCreditsRacingTakesLoseNoTake is the same race with credits, as a
// Limiter gives back what its estimates took beyond the usage: the takes
// never pass what the bucket allows and the credits gave back.
func limitCreditsRacingTakesLoseNoTake(t *testing.T, s httpguard.LimitStore) {
	correctionsRacingTakes(t, s, -1)
}

// correctionsRacingTakes adjusts a key's tokens by n, again and again,
// while its tokens are taken, and checks that the takes never pass the
// bucket's burst, its refill and the tokens the corrections gave back.
func correctionsRacingTakes(t *testing.T, s httpguard.LimitStore, n int64) {
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1, Burst: 200}
	// The race is run for a number of takes, not a time alone: on cores
	// shared with other work, 50ms may give the goroutines too few turns
	// for a lost take to show. The cap keeps a slow store's run short.
	const minTakes = 20000
	var taken, tries, given atomic.Int64
	var takers, adjusters sync.WaitGroup
	var done atomic.Bool
	start := time.Now()
	stop, limit := start.Add(50*time.Millisecond), start.Add(time.Second)
	for i := range 8 {
		// One goroutine credits: two racing credits could lose one of
		// them, which would hide a take lost.
		if i%2 == 0 && (n > 0 || i == 0) {
			adjusters.Add(1)
			go func() {
				defer adjusters.Done()
				for !done.Load() {
					// Credits, for half the tokens taken at most, never
					// find the bucket full: each gives its token back, and
					// the bound is exact.
					if n < 0 && given.Load() >= taken.Load()/2 {
						runtime.Gosched()
						continue
					}
					if !assert.NoError(t, s.Adjust(ctx, "k", toks, n)) {
						return
					}
					given.Add(max(-n, 0))
				}
			}()
			continue
		}
		if i%2 == 0 {
			continue
		}
		takers.Add(1)
		go func() {
			defer takers.Done()
			for now := time.Now(); now.Before(stop) || tries.Load() < minTakes && now.Before(limit); now = time.Now() {
				tries.Add(1)
				wait, _, err := s.Take(ctx, "k", noLimit, toks, 1)
				if !assert.NoError(t, err) {
					return
				}
				if wait == 0 {
					taken.Add(1)
				}
				runtime.Gosched()
			}
		}()
	}
	takers.Wait()
	done.Store(true)
	adjusters.Wait()
	allowed := float64(toks.Burst) + toks.Rate*time.Since(start).Seconds() + float64(given.Load()) + 1
	assert.LessOrEqual(t, float64(taken.Load()), allowed, "tokens taken while corrections of %d ran, %d tokens given back", n, given.Load())
}

func limitKeepsKeysApart(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	takeNow(t, s, "a", slowRequests, slowTokens, 100)
	require.NoError(t, s.Pause(ctx, "a", time.Minute))
	require.NoError(t, s.Adjust(ctx, "a", slowTokens, 50))

	takeNow(t, s, "b", slowRequests, slowTokens, 100, "b is untouched by what a took, its pause and its debit")
	_, by := take(t, s, "a", slowRequests, slowTokens, 1)
	assert.Equal(t, httpguard.ThrottlePaused, by)
}

func limitForgetsIdleState(t *testing.T, s httpguard.LimitStore) {
	ctx := context.Background()
	takeNow(t, s, "k", fastRequests, fastTokens, 100)
	takeNow(t, s, "k", fastRequests, noLimit, 0)
	require.NoError(t, s.Adjust(ctx, "k", fastTokens, 20))
	require.NoError(t, s.Pause(ctx, "k", 20*time.Millisecond))

	// Once the buckets have refilled (20ms, and 120ms for the tokens) and
	// the pause is over, the key is as new: a whole burst of requests and
	// tokens at once.
	time.Sleep(200 * time.Millisecond)
	takeNow(t, s, "k", fastRequests, fastTokens, fastTokens.Burst)
	takeNow(t, s, "k", fastRequests, noLimit, 0)

	if l, ok := s.(interface{ Len() int }); ok {
		assert.Eventually(t, func() bool { return l.Len() == 0 }, time.Second, 10*time.Millisecond, "the store dropped the idle key")
	}
}

// slowDown calls s.SlowDown, tolerating no 429, failing the test on an
// error.
func slowDown(t *testing.T, s httpguard.AdaptiveLimitStore, key string, sentAgo time.Duration, rate float64) httpguard.AdaptiveRate {
	t.Helper()
	ar, beyond, err := s.SlowDown(context.Background(), key, sentAgo, rate, 0)
	require.NoError(t, err)
	require.True(t, beyond, "a 429 is beyond a tolerated share of 0")
	return ar
}

// The store judges the share of the key's 429s among the requests it
// admitted for it over the last second, all its Limiters' together: a few
// 429s within the tolerated share cut nothing; the one that passes it
// cuts. The requests it refused were not sent, and count for nothing: a
// store that counted them would let a key it refuses often, one sending
// at its limit, take ever more 429s before it slows down.
func adaptiveToleratesAShareOf429s(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 100}
	for range 100 {
		takeNow(t, s, "k", lots, noLimit, 0)
	}
	// At a request a second, the first of these may be admitted (if the
	// 100 took long), and the others are refused.
	admitted := 100
	for range 100 {
		if wait, _ := take(t, s, "k", slowRequests, noLimit, 0); wait == 0 {
			admitted++
		}
	}
	require.Less(t, admitted, 110, "10% of them is 10 429s")
	for i := range 10 {
		ar, beyond, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
		require.NoError(t, err)
		assert.False(t, beyond, "429 %d of 100 requests", i+1)
		assert.Zero(t, ar, "429 %d of 100 requests: no decrease", i+1)
	}
	ar, beyond, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
	require.NoError(t, err)
	assert.True(t, beyond, "11 429s of 100 requests")
	assert.EqualValues(t, 1, ar.Decreases)
}

// The share of 429s is of the requests admitted over the last second:
// older ones count less and less (a store may count in windows of a
// second, the one before weighed by what of it is still within the last
// second), and a request of 1.2s ago is at most 80% of one. A store that
// counted every request would let a key busy for an hour take a second's
// worth of 429s before its fleet slowed down.
func adaptiveJudgesTheRequestsOfTheLastSecond(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 100}
	for range 100 {
		takeNow(t, s, "k", lots, noLimit, 0)
	}
	// A store may count the requests it admits a moment late (redisguard's
	// with the key's next Take or SlowDown), but in the second they were
	// admitted in: here with the first 429, 1.2s on.
	time.Sleep(1200 * time.Millisecond)

	beyond := false
	for range 10 {
		_, b, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
		require.NoError(t, err)
		beyond = beyond || b
	}

	assert.True(t, beyond, "10 429s are beyond 10% of 80 requests or fewer")
}

// A decrease on 429s fewer than twice the tolerated share forgets them:
// the next 429, of a request sent after it, is judged on its own. One on
// a share twice the tolerated one or more keeps them, and the next 429
// cuts again.
func adaptiveForgetsTheShareOfAChanceCut(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 100}
	for _, key := range []string{"chance", "kept"} {
		for range 100 {
			takeNow(t, s, key, lots, noLimit, 0)
		}
	}
	// chance: 11 429s of 100 requests, tolerating 10%: beyond, under 20%.
	for range 10 {
		_, _, err := s.SlowDown(ctx, "chance", time.Millisecond, 100, 0.1)
		require.NoError(t, err)
	}
	ar, beyond, err := s.SlowDown(ctx, "chance", time.Millisecond, 100, 0.1)
	require.NoError(t, err)
	require.True(t, beyond)
	require.EqualValues(t, 1, ar.Decreases)
	// kept: 2 429s of 100 requests, tolerating 1%: twice the share.
	_, _, err = s.SlowDown(ctx, "kept", time.Millisecond, 100, 0.01)
	require.NoError(t, err)
	ar, beyond, err = s.SlowDown(ctx, "kept", time.Millisecond, 100, 0.01)
	require.NoError(t, err)
	require.True(t, beyond)
	require.EqualValues(t, 1, ar.Decreases)

	time.Sleep(10 * time.Millisecond) // a request sent after the decreases
	ar, beyond, err = s.SlowDown(ctx, "chance", time.Millisecond, 100, 0.1)
	require.NoError(t, err)
	assert.False(t, beyond, "chance: 1 429 since the cut forgot 11, of 100 requests")
	assert.EqualValues(t, 1, ar.Decreases, "chance: no second decrease")
	ar, beyond, err = s.SlowDown(ctx, "kept", time.Millisecond, 100, 0.01)
	require.NoError(t, err)
	assert.True(t, beyond, "kept: 3 429s of 100 requests")
	assert.EqualValues(t, 2, ar.Decreases, "kept: a new round's decrease")
}

// A decrease within a second of another is no chance, whatever its
// share: it keeps its 429s, and the next round's 429 cuts again. (A key
// that ran at its rate when the provider's fell passes the share
// gradually, and each of its cuts is on a share just beyond it.)
func adaptiveKeepsTheShareOfACutSoonAfterAnother(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 100}
	for range 100 {
		takeNow(t, s, "k", lots, noLimit, 0)
	}
	// 11 429s of 100 requests, tolerating 10%: a chance cut, forgotten.
	for range 11 {
		_, _, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
		require.NoError(t, err)
	}
	ar, err := s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	require.EqualValues(t, 1, ar.Decreases)
	time.Sleep(10 * time.Millisecond) // requests sent after the decrease
	for range 11 {
		_, _, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
		require.NoError(t, err)
	}
	ar, err = s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	require.EqualValues(t, 2, ar.Decreases, "11 more 429s of 100 requests")

	time.Sleep(10 * time.Millisecond)
	ar, beyond, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0.1)
	require.NoError(t, err)
	assert.True(t, beyond, "the second cut, soon after the first, kept its 11 429s: 12 of 100")
	assert.EqualValues(t, 3, ar.Decreases, "a new round's decrease")
}

// A rate or a tolerated share that is not one is an error, and records
// nothing.
func adaptiveRefusesABadSlowDown(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	for _, c := range []struct{ rate, tolerated float64 }{
		{math.NaN(), 0}, {math.Inf(1), 0}, {-1, 0},
		{100, math.NaN()}, {100, -0.1}, {100, 1.5},
	} {
		_, _, err := s.SlowDown(ctx, "k", time.Millisecond, c.rate, c.tolerated)
		assert.Error(t, err, "rate %v, tolerated %v", c.rate, c.tolerated)
	}
	ar, err := s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.Zero(t, ar, "nothing recorded")
}

func adaptiveStartsWithNoDecrease(t *testing.T, s httpguard.AdaptiveLimitStore) {
	takeNow(t, s, "k", fastRequests, noLimit, 0)
	ar, err := s.AdaptiveRate(context.Background(), "k")
	require.NoError(t, err)
	assert.Zero(t, ar)
}

func adaptiveSlowsDownOncePerRound(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ar := slowDown(t, s, "k", time.Millisecond, 100)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.InDelta(t, 100, ar.From, 1e-9, "nothing admitted: from the rate in force")
	// A 429 to a request sent before the decrease is the same round.
	ar = slowDown(t, s, "k", time.Minute, 50)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.InDelta(t, 100, ar.From, 1e-9)
	// One sent after it is a new round.
	time.Sleep(10 * time.Millisecond)
	ar = slowDown(t, s, "k", time.Millisecond, 60)
	assert.EqualValues(t, 2, ar.Decreases)
	assert.InDelta(t, 60, ar.From, 1e-9)
	assert.Less(t, ar.Since, 10*time.Millisecond)
	// Keys are apart.
	assert.EqualValues(t, 1, slowDown(t, s, "other", time.Millisecond, 100).Decreases)
	// A decrease is dated when it is made, not when the request was sent:
	// the rate recovers from it (a request in flight a minute would
	// otherwise start the curve a minute along).
	start := time.Now()
	ar = slowDown(t, s, "sent long ago", time.Minute, 100)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.LessOrEqual(t, ar.Since, time.Since(start), "a decrease for a request sent a minute ago")
}

func adaptiveSlowsDownFromTheRateAccepted(t *testing.T, s httpguard.AdaptiveLimitStore) {
	ctx := context.Background()
	lots := httpguard.BucketLimit{Rate: 10_000, Burst: 100}
	start := time.Now()
	for range 20 {
		takeNow(t, s, "k", lots, noLimit, 0)
	}
	// Another key's 20 requests, 11 of which will be answered 429.
	takeNow(t, s, "refused", lots, noLimit, 0)
	firstTaken := time.Now()
	for range 19 {
		takeNow(t, s, "refused", lots, noLimit, 0)
	}
	// 20 requests over about 100ms, one of them refused: about 190/s
	// accepted, far below the 10,000/s in force. On a loaded machine the
	// sleep may run long, and the rate accepted is lower by as much: the
	// lower bound scales with the time that really passed.
	time.Sleep(100 * time.Millisecond)
	ar := slowDown(t, s, "k", time.Millisecond, 10_000)
	elapsed := time.Since(start)
	assert.EqualValues(t, 1, ar.Decreases)
	assert.Greater(t, ar.From, 50.0*min(1, (100*time.Millisecond).Seconds()/elapsed.Seconds()), "after %v", elapsed)
	assert.Less(t, ar.From, 200.0)

	// 10 429s of the 20 requests are within a tolerated half; the 11th
	// cuts, from the 9 requests accepted, not the 20 admitted: cut from
	// those, a rate the provider refuses a good share of would stay above
	// what it accepts.
	var trip time.Duration
	for i := range 10 {
		called := time.Now()
		_, beyond, err := s.SlowDown(ctx, "refused", time.Millisecond, 10_000, 0.5)
		if i == 0 {
			trip = time.Since(called)
		}
		require.NoError(t, err)
		require.False(t, beyond, "429 %d of 20 requests", i+1)
	}
	// The store counts at least this long since the first request, less
	// the first SlowDown's round trip (a millisecond at least): a store
	// across a network may send the requests it admitted with that call,
	// with their age, and date them on its own clock, a trip away; a trip
	// longer than a later one's shortens the span by the difference.
	span := min(time.Since(firstTaken), time.Second) - max(trip, time.Millisecond)
	ar, beyond, err := s.SlowDown(ctx, "refused", time.Millisecond, 10_000, 0.5)
	require.NoError(t, err)
	require.True(t, beyond, "11 429s of 20 requests")
	assert.EqualValues(t, 1, ar.Decreases)
	assert.LessOrEqual(t, ar.From, 9/span.Seconds(), "9 requests accepted over %v or more", span)
}

func adaptiveTakeReadsTheDecrease(t *testing.T, s httpguard.AdaptiveLimitStore) {
	want := slowDown(t, s, "k", time.Millisecond, 100)
	time.Sleep(10 * time.Millisecond)
	takeNow(t, s, "k", fastRequests, noLimit, 0)
	ar, err := s.AdaptiveRate(context.Background(), "k")
	require.NoError(t, err)
	assert.Equal(t, want.Decreases, ar.Decreases)
	assert.InDelta(t, want.From, ar.From, 1e-9)
	assert.GreaterOrEqual(t, ar.Since, 10*time.Millisecond, "the time since the decrease grows")
}

// turnTokens refills a token every 100µs, a burst of 2,000 in 200ms.
var turnTokens = httpguard.BucketLimit{Rate: 10_000, Burst: 2_000}

// takeTurn asserts that s.TakeTurn takes n tokens at once, and returns the
// turn's end.
func takeTurn(t *testing.T, s httpguard.TurnLimitStore, key string, n int64) int64 {
	t.Helper()
	wait, _, end, err := s.TakeTurn(context.Background(), key, noLimit, turnTokens, n)
	require.NoError(t, err)
	require.Zero(t, wait, "%d tokens at once", n)
	return end
}

// creditTurn credits n tokens of the turn that ended at end, and returns
// by how much the wait for a whole burst of turnTokens shrank, and an
// upper bound of the time the store's clock moved meanwhile. The bucket
// must be short of a burst before and after.
func creditTurn(t *testing.T, s httpguard.TurnLimitStore, key string, end, n int64) (shrank, moved time.Duration) {
	t.Helper()
	start := time.Now()
	before, by := take(t, s, key, noLimit, turnTokens, turnTokens.Burst)
	require.Equal(t, httpguard.ThrottleTokens, by)
	require.NoError(t, s.CreditTurn(context.Background(), key, turnTokens, end, n))
	after, by := take(t, s, key, noLimit, turnTokens, turnTokens.Burst)
	require.Equal(t, httpguard.ThrottleTokens, by)
	return before - after, time.Since(start)
}

// A turn's tokens that the bucket has refilled are owed no more: a late
// credit of them (a long answer's usage, read once the bucket had stood
// full and another turn had taken it whole) gives nothing back. Given
// back, they would be the later turn's, and the bucket would pass them
// twice.
func turnCreditsNothingOfTokensRefilled(t *testing.T, s httpguard.TurnLimitStore) {
	end := takeTurn(t, s, "k", 1_200) // A: refilled in 120ms
	time.Sleep(150 * time.Millisecond)
	takeTurn(t, s, "k", turnTokens.Burst) // B finds the bucket full and drains it

	shrank, moved := creditTurn(t, s, "k", end, 1_000) // A's answer used 200

	// Crediting A's 1,000 would shrink the wait by 100ms; only the
	// bucket's refill meanwhile shrinks it (and a token of rounding).
	assert.LessOrEqual(t, shrank, moved+100*time.Microsecond, "A's refilled tokens credited")
}

// A turn taken behind others, as a queue keeps a bucket empty, leaves the
// bucket a whole burst behind: its tokens are owed until the bucket has
// refilled everything before them too, not only for their own refill, and
// a credit while they are owed is given back whole. A credit bounded by
// the tokens' own refill from the turn would starve a busy bucket: every
// answer would be charged its duration's refill beyond what it used.
func turnCreditsATurnBehindOthersWhole(t *testing.T, s httpguard.TurnLimitStore) {
	start := time.Now()
	takeTurn(t, s, "k", 1_800)
	end := takeTurn(t, s, "k", 200) // X: its own tokens refill in 20ms, the bucket in 200ms
	time.Sleep(30 * time.Millisecond)

	shrank, _ := creditTurn(t, s, "k", end, 200) // X's answer used none

	// X's tokens are owed until the bucket has refilled all 2,000, 200ms
	// after the first turn: whole until 180ms, then fewer as the bucket
	// refills them. elapsed, read after the credit, is later than it: the
	// bound is on the safe side on a slow machine too.
	elapsed := time.Since(start)
	owed := min(20*time.Millisecond, 200*time.Millisecond-elapsed)
	assert.GreaterOrEqual(t, shrank, owed-100*time.Microsecond, "X's 200 tokens credited whole (%v after the first turn)", elapsed)
}

// A turn of no end (httpguard.NoTurnEnd: it took no tokens, or the store
// could not tell its end) is credited as Adjust credits a turn, whole. A
// store that read NoTurnEnd as a time, long past, would give nothing back,
// and its Limiter would count every overestimate of such a turn as used.
func turnCreditsATurnOfNoEndWhole(t *testing.T, s httpguard.TurnLimitStore) {
	wait, _, end, err := s.TakeTurn(context.Background(), "k", noLimit, turnTokens, 0)
	require.NoError(t, err)
	require.Zero(t, wait)
	assert.Equal(t, httpguard.NoTurnEnd, end, "a turn that took no tokens has no end")
	takeNow(t, s, "k", noLimit, turnTokens, turnTokens.Burst, "a whole burst at once")

	shrank, _ := creditTurn(t, s, "k", httpguard.NoTurnEnd, 1_000)

	// 1,000 tokens given back shrink the wait by 100ms, and the bucket's
	// refill meanwhile by more (a token of rounding aside).
	assert.GreaterOrEqual(t, shrank, 100*time.Millisecond-100*time.Microsecond, "the 1,000 tokens credited whole")
}

// takeAhead calls s.TakeTurnAhead, failing the test on an error or on a
// turn taken further ahead than asked.
func takeAhead(t *testing.T, s httpguard.AheadLimitStore, key string, reqs, toks httpguard.BucketLimit, n int64, ahead time.Duration) (time.Duration, httpguard.ThrottleReason, int64) {
	t.Helper()
	wait, by, end, err := s.TakeTurnAhead(context.Background(), key, reqs, toks, n, ahead)
	require.NoError(t, err)
	require.GreaterOrEqual(t, wait, time.Duration(0))
	if by == "" {
		require.LessOrEqual(t, wait, ahead, "a turn taken further ahead than asked")
	}
	return wait, by, end
}

// A turn due within ahead is taken, and its wait says when it is due: the
// request goes then, not at once. It is counted as any turn: the next
// turn comes an interval after it. A turn due later than ahead is
// refused, with a wait until its own time, not until ahead of it: a
// Limiter that asked again then would take it further ahead every time.
func aheadTakesATurnDueWithinAhead(t *testing.T, s httpguard.AheadLimitStore) {
	for i := range fiveRequests.Burst {
		takeNow(t, s, "k", fiveRequests, noLimit, 0, "burst request %d", i+1)
	}

	wait, by, _ := takeAhead(t, s, "k", fiveRequests, noLimit, 0, 300*time.Millisecond)
	assert.Empty(t, by, "the turn at 200ms is due within 300ms")
	assert.Greater(t, wait, 100*time.Millisecond, "and goes then, not now")

	wait, by = take(t, s, "k", fiveRequests, noLimit, 0)
	assert.Equal(t, httpguard.ThrottleRequests, by)
	assert.Greater(t, wait, 300*time.Millisecond, "the turn taken ahead is counted: the next is at 400ms")

	wait, by, _ = takeAhead(t, s, "k", fiveRequests, noLimit, 0, 100*time.Millisecond)
	assert.Equal(t, httpguard.ThrottleRequests, by, "the turn at 400ms is not due within 100ms")
	assert.Greater(t, wait, 300*time.Millisecond, "its wait is until its own time")
}

// Tokens due within ahead are taken as a request's turn is; a request
// whose tokens are not due within ahead takes nothing, its request given
// back.
func aheadTakesTokensBothOrNeither(t *testing.T, s httpguard.AheadLimitStore) {
	takeNow(t, s, "k", noLimit, fastTokens, 100)

	wait, by, end := takeAhead(t, s, "k", noLimit, fastTokens, 40, 100*time.Millisecond)
	assert.Empty(t, by, "40 tokens are due within 100ms")
	assert.Greater(t, wait, 20*time.Millisecond, "at 40ms")
	assert.NotEqual(t, httpguard.NoTurnEnd, end, "a turn that took tokens has an end")

	wait, by, _ = takeAhead(t, s, "k", noLimit, fastTokens, 100, 50*time.Millisecond)
	assert.Equal(t, httpguard.ThrottleTokens, by, "100 more are due at 140ms")
	assert.Greater(t, wait, 100*time.Millisecond, "its wait is until its own time")

	reqs := httpguard.BucketLimit{Rate: 1, Burst: 2}
	takeNow(t, s, "both", reqs, slowTokens, 100)
	_, by, _ = takeAhead(t, s, "both", reqs, slowTokens, 1, 100*time.Millisecond)
	require.Equal(t, httpguard.ThrottleTokens, by, "a token is due in a second")
	takeNow(t, s, "both", reqs, noLimit, 0, "the refused turn's request was given back")
}

// A paused key takes no turn ahead, not even one due after the pause
// ends: the pause is the provider's word, and its end is the store's to
// tell, by its wait.
func aheadTakesNothingAheadOfAPause(t *testing.T, s httpguard.AheadLimitStore) {
	require.NoError(t, s.Pause(context.Background(), "k", 60*time.Millisecond))

	wait, by, _ := takeAhead(t, s, "k", slowRequests, noLimit, 0, time.Second)

	assert.Equal(t, httpguard.ThrottlePaused, by)
	assert.Greater(t, wait, 30*time.Millisecond)
	assert.LessOrEqual(t, wait, 60*time.Millisecond)
}

// Goroutines taking turns ahead all at once take no more than GCRA's
// burst and rate allow up to ahead past the end: each turn is taken once.
func aheadNeverTakesMoreThanBurstAndRateAllow(t *testing.T, s httpguard.AheadLimitStore) {
	const goroutines, minTakes, ahead = 8, 5, 30 * time.Millisecond
	var taken atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(100 * time.Millisecond)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < minTakes || time.Now().Before(stop); j++ {
				wait, by, _, err := s.TakeTurnAhead(context.Background(), "k", fastRequests, noLimit, 0, ahead)
				if !assert.NoError(t, err) {
					return
				}
				if by == "" {
					assert.LessOrEqual(t, wait, ahead, "a turn taken further ahead than asked")
					taken.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := (time.Since(start) + ahead).Seconds()

	assert.LessOrEqual(t, float64(taken.Load()), float64(fastRequests.Burst)+fastRequests.Rate*elapsed+1)
	assert.GreaterOrEqual(t, taken.Load(), fastRequests.Burst, "the burst at least")
}
