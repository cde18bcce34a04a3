package httpguard

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Requests that go to sleep in a key's queue while a pause comes, on many
// keys at once, none of them waiting until its sleep has begun: every one
// asleep when the pause comes, or about to sleep, or arriving after it, is
// refused without the clock moving (the pause outlasts what they may
// wait). One that missed its wake would sleep on the frozen clock.
func TestLimiterWakesEverySleeperOfARacingPause(t *testing.T) {
	for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
		"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(block)
			l := newLimiter(t, LimitConfig{RequestsPerSecond: 100, Burst: 1, MaxWait: time.Second}, clk)
			const keys, callers, rounds = 8, 40, 5
			for round := range rounds {
				var wg sync.WaitGroup
				var sent, refused atomic.Int64
				for k := range keys {
					ks := limKey(t, l, "h", "m"+strconv.Itoa(k))
					for i := range callers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							_, _, err := l.acquire(context.Background(), ks, 0, clk.Now())
							switch {
							case err == nil:
								sent.Add(1)
							case errors.Is(err, ErrRateLimited):
								refused.Add(1)
							default:
								t.Error(err)
							}
						}()
						if i == callers/2 {
							go l.pause(context.Background(), ks, clk.Now(), clk.Now().Add(10*time.Second))
						}
					}
				}
				finished := make(chan struct{})
				go func() { wg.Wait(); close(finished) }()
				select {
				case <-finished:
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: %d asleep on the frozen clock, a pause missed them", round, clk.Sleeping())
				}
				assert.LessOrEqual(t, sent.Load(), int64(keys), "round %d: at most the burst of each key before its pause", round)
				assert.EqualValues(t, keys*callers, sent.Load()+refused.Load())
				assert.Zero(t, clk.Sleeping())
				clk.Advance(11 * time.Second) // the pauses end
			}
			for k := range keys {
				ks := limKey(t, l, "h", "m"+strconv.Itoa(k))
				ks.mu.Lock()
				assert.Zero(t, ks.waiting, "places held")
				ks.mu.Unlock()
			}
		})
	}
}

// Thousands of callers queued on a key when a pause comes that they can
// wait out go after it one by one at the rate: none before it ends, none
// closer to another than the rate's interval, and none refused.
func TestLimiterReleasesThousandsQueuedBehindAPauseAtTheRate(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1000, Burst: 1, MaxWait: time.Minute}, clk)
	ks := limKey(t, l, "h", "m")
	const callers = 2000
	var mu sync.Mutex
	var sentAt []time.Time
	var done atomic.Int64
	for range callers {
		go func() {
			defer done.Add(1)
			at, _, err := l.acquire(context.Background(), ks, 0, clk.Now())
			assert.NoError(t, err)
			mu.Lock()
			sentAt = append(sentAt, at)
			mu.Unlock()
		}()
	}
	require.Eventually(t, func() bool { return clk.Sleeping()+int(done.Load()) == callers }, 10*time.Second, time.Millisecond)
	pausedAt := clk.Now()
	until := pausedAt.Add(5 * time.Second)
	l.pause(context.Background(), ks, pausedAt, until)
	clk.Drive(t, callers, &done)

	require.Len(t, sentAt, callers)
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(sentAt, time.Time.Compare)
	before := 0
	for _, at := range sentAt {
		if at.Before(until) {
			before++
		}
	}
	assert.LessOrEqual(t, before, 1, "only the burst before the pause")
	for i := before + 1; i < len(sentAt); i++ {
		if gap := sentAt[i].Sub(sentAt[i-1]); gap < time.Millisecond {
			t.Fatalf("turns %d and %d %v apart", i, i+1, gap)
		}
	}
	last := sentAt[len(sentAt)-1]
	assert.LessOrEqual(t, last.Sub(until), time.Duration(callers)*time.Millisecond, "spaced at the rate, not slower")
}
