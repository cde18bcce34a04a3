package httpguard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gateStore is a store across a network whose answers wait for gate: asks
// counts the asks out.
type gateStore struct {
	s    *MemoryLimitStore
	hold atomic.Bool
	gate chan struct{}
	asks atomic.Int64
}

func (g *gateStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	if g.hold.Load() {
		g.asks.Add(1)
		<-g.gate
	}
	return g.s.Take(ctx, key, reqs, toks, n)
}

func (g *gateStore) Pause(ctx context.Context, key string, d time.Duration) error {
	return g.s.Pause(ctx, key, d)
}

func (g *gateStore) Adjust(ctx context.Context, key string, toks BucketLimit, n int64) error {
	return g.s.Adjust(ctx, key, toks, n)
}

// Requests that find nobody queued while as many as the buckets could
// grant ask a store the config names wait in line for an answer instead
// of asking too, and queue in the order they came once the store refuses:
// at 10/s, burst 1, its burst spent, two ask (the burst, and one more),
// the eight after them wait, and take their places in their order as the
// first refusal comes back.
func TestLimiterCrowdWaitsInLineForTheStoresAnswerAndKeepsItsOrder(t *testing.T) {
	order, refused := runLine(t, 10*time.Second)
	assert.Empty(t, refused)
	require.Len(t, order, 10)
	assert.Equal(t, []int{2, 3, 4, 5, 6, 7, 8, 9}, order[1:9], "the line, in its order, behind the first refused")
	assert.ElementsMatch(t, []int{0, 1}, []int{order[0], order[9]}, "the two that asked, refused both")
}

// Those of the line whose places come beyond what they may wait are
// refused as they take them, without asking the store: with MaxWait
// 450 ms, the places at 200, 300 and 400 ms are served, the others
// refused.
func TestLimiterCrowdInLineRefusedBeyondMaxWaitAsksNothing(t *testing.T) {
	order, refused := runLine(t, 450*time.Millisecond)
	require.Len(t, order, 4)
	assert.Equal(t, []int{2, 3, 4}, order[1:], "the line's first three, in their order")
	assert.ElementsMatch(t, []int{0, 1, 5, 6, 7, 8, 9}, append(refused, order[0]), "the rest of the line, and one of the two that asked")
}

// runLine sends a crowd of ten, numbered in the order they come, at 10/s,
// burst 1, its burst spent, on a store whose answers wait until the crowd
// is there, and returns the numbers of those served and refused, in the
// order they were.
func runLine(t *testing.T, maxWait time.Duration) (order, refused []int) {
	clk := newFakeClock(block)
	store := &gateStore{s: newMemoryLimitStore(clk.Now), gate: make(chan struct{})}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: maxWait, Store: store}, clk)
	var mu sync.Mutex
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
	})
	code, err := getStatus(t, context.Background(), client, srv.URL+"/-1") // the burst
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	store.hold.Store(true)
	const crowd = 10
	var done atomic.Int64
	for i := range crowd {
		go func() {
			defer done.Add(1)
			code, err := getStatus(t, context.Background(), client, fmt.Sprintf("%s/%d", srv.URL, i))
			if errors.Is(err, ErrRateLimited) {
				mu.Lock()
				refused = append(refused, i)
				mu.Unlock()
				return
			}
			assert.NoError(t, err)
			assert.Equal(t, http.StatusOK, code)
		}()
		if i < 2 {
			require.Eventually(t, func() bool { return store.asks.Load() == int64(i+1) }, 5*time.Second, 50*time.Microsecond, "request %d asks", i)
		} else {
			require.Eventually(t, func() bool { return clk.Sleeping() == i-1 }, 5*time.Second, 50*time.Microsecond, "request %d waits in line", i)
		}
	}
	assert.EqualValues(t, 2, store.asks.Load(), "the others wait for an answer")
	close(store.gate)
	clk.Drive(t, crowd, &done)
	assert.LessOrEqual(t, store.asks.Load(), int64(crowd+2), "one ask a request at most, and the two refused again")
	t.Logf("%d asks of the store for %d requests", store.asks.Load(), crowd)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, -1, order[0])
	return order[1:], refused
}
