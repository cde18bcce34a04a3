package httpguard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request whose context ends while it holds a place in the middle of
// the queue gives its turn to the requests behind it: they move up, each
// still a gap after the one before, and are woken to sleep less. Ten
// requests queue at 10/s (Burst 1) behind a full bucket, and the first
// five are cancelled: the other five go at 100, 200, ... 500 ms. They
// went at 600 ms to 1 s, the key idle for half a second with requests
// waiting and its bucket full: only the last place of a queue was given
// back, and every turn of a caller that gave up in the middle went to
// nobody, so that a queue that never empties (a gateway whose clients
// hang up while they wait) ran below its rate by as many.
func TestLimiterGivesTheTurnsOfCancelledWaitersToTheQueueBehindThem(t *testing.T) {
	for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
		"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(block)
			l := newLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
			srv, client, hits := newLimitedServer(t, l, clk, nil)
			_, err := getStatus(t, context.Background(), client, srv.URL)
			require.NoError(t, err)
			start := clk.Now()

			const waiters, cancelled = 10, 5
			cancels := make([]context.CancelFunc, waiters)
			var done atomic.Int64
			for i := range waiters {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i] = cancel
				go func() {
					defer done.Add(1)
					_, err := getStatus(t, ctx, client, srv.URL)
					if i < cancelled {
						assert.ErrorIs(t, err, context.Canceled)
					} else {
						assert.NoError(t, err)
					}
				}()
				require.Eventually(t, func() bool { return clk.Sleeping() == i+1 }, 5*time.Second, time.Millisecond, "waiter %d queues", i)
			}
			for i := range cancelled {
				cancels[i]()
				require.Eventually(t, func() bool { return done.Load() == int64(i+1) }, 5*time.Second, time.Millisecond, "waiter %d gives up", i)
			}
			clk.Drive(t, waiters, &done)

			times := hits.Times()[1:]
			require.Len(t, times, waiters-cancelled)
			for i, at := range times {
				assert.Equal(t, time.Duration(i+1)*100*time.Millisecond, at.Sub(start), "request %d of those left", i+1)
			}
			assert.Zero(t, clk.Sleeping())
		})
	}
}
