package redisguard

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two processes' stores on one Redis share a key's adaptive rate: a 429
// cuts it once per round, from the rate the fleet's requests were accepted
// at, and the other store reads the decrease with its next Take.
func TestLimitStoresShareTheAdaptiveRate(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	a := newLimitStore(t, client, LimitStoreConfig{Name: "shared"})
	b := newLimitStore(t, client, LimitStoreConfig{Name: "shared"})
	ctx := context.Background()
	reqs := httpguard.BucketLimit{Rate: 1000, Burst: 1000}
	start := time.Now()
	for i := range 40 { // 40 requests admitted at once, by either process
		s := a
		if i%2 == 1 {
			s = b
		}
		wait, _, err := s.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
		require.NoError(t, err)
		require.Zero(t, wait)
	}
	// 41 requests in about 100ms: the fleet was accepted at about 400/s.
	// A store counts what it admitted with a Take of the key 50ms on (b
	// here), or with its next SlowDown (a).
	time.Sleep(100 * time.Millisecond)
	wait, _, err := b.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
	require.NoError(t, err)
	require.Zero(t, wait)
	ar, _, err := a.SlowDown(ctx, "k", 10*time.Millisecond, 1000, 0)
	elapsed := time.Since(start)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar.Decreases)
	// The rate accepted is the requests counted, less the 429s, over the
	// time since the first of them: the 40 of the loop (b's 41st is
	// counted with its next Take) less this 429, so 39 in about 100ms.
	// On a loaded machine the loop and the sleep run longer and the rate
	// is lower, but never under 39 requests over the whole time taken
	// (asked for 40, a loop slowed to 300ms fell short: 39 over the 308ms
	// Redis measured, where the test took 311ms), and never over 41 over
	// the 100ms slept. Redis measures with its wall clock, this test with
	// the monotonic one: a CI machine's wall clock was seen stepped by a
	// millisecond within a second, so 5ms of difference are allowed.
	assert.GreaterOrEqual(t, ar.From, 39/(elapsed+5*time.Millisecond).Seconds(), "cut from the rate accepted, not the 1000/s in force")
	assert.LessOrEqual(t, ar.From, 410.0, "cut from the rate accepted, not the 1000/s in force")

	// b's 429 to a request sent before the cut is the same round.
	ar2, _, err := b.SlowDown(ctx, "k", time.Minute, 500, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar2.Decreases)
	assert.InDelta(t, ar.From, ar2.From, 1e-6)

	// a's decrease reaches the store of another process with its Take.
	c := newLimitStore(t, client, LimitStoreConfig{Name: "shared"})
	got, err := c.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.Zero(t, got, "nothing read yet")
	_, _, err = c.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
	require.NoError(t, err)
	got, err = c.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.EqualValues(t, 1, got.Decreases)
	assert.InDelta(t, ar.From, got.From, 1e-6)

	// A 429 to a request sent after the cut is a new round.
	time.Sleep(5 * time.Millisecond)
	ar3, _, err := c.SlowDown(ctx, "k", time.Millisecond, 20, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 2, ar3.Decreases)
	assert.InDelta(t, 20, ar3.From, 1e-9)
}

var fleetConvergeDuration = flag.Duration("fleet.converge", 10*time.Second, "how long BenchmarkFleetConverge runs each case")

// A fleet of Limiters, each on a LimitStore of its own (as processes have)
// sharing one Redis, against a provider enforcing 50 requests/s (burst 5)
// while the Limiters are set to 200/s: the issue 7 scenario (50 callers,
// a Retrier outside each Limiter) spread over the replicas. It reports the
// rate served and the share of requests answered 429, with the fleet's
// adaptive rate kept in Redis (shared-rate) and, as before the store kept
// it, adapted in each process (per-process-rate).
// Run: go test -run '^$' -bench FleetConverge -benchtime 1x
func BenchmarkFleetConverge(b *testing.B) {
	client := startRedis(b, redisOptions{}).client(b)
	for _, c := range []struct {
		name    string
		headers httpguardtest.RateLimitHeaders
	}{{"bare-429", httpguardtest.NoRateLimitHeaders}, {"retry-after-1s+reset-20ms", httpguardtest.CoarseRetryAfter}} {
		for _, replicas := range []int{1, 4, 8} {
			for _, perProcess := range []bool{false, true} {
				mode := "shared-rate"
				if perProcess {
					mode = "per-process-rate"
				}
				b.Run(fmt.Sprintf("%s/replicas-%d/%s", c.name, replicas, mode), func(b *testing.B) {
					var served, share float64
					for range b.N {
						served, share = runFleetConverge(b, client, c.headers, replicas, perProcess, *fleetConvergeDuration)
					}
					b.ReportMetric(served, "served/s")
					b.ReportMetric(2*served, "%provider")
					b.ReportMetric(share, "%429")
				})
			}
		}
	}
}

func runFleetConverge(b *testing.B, client redis.UniversalClient, headers httpguardtest.RateLimitHeaders, replicas int, perProcess bool, d time.Duration) (served, share429 float64) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{RequestsPerSecond: 50, Burst: 5, RateLimitHeaders: headers})
	require.NoError(b, err)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	name := fmt.Sprintf("converge-%d", storeNames.Add(1))
	clients := make([]*http.Client, replicas)
	for i := range clients {
		var store httpguard.LimitStore = newLimitStore(b, client, LimitStoreConfig{Name: name})
		if perProcess {
			store = struct{ httpguard.LimitStore }{store} // hides AdaptiveLimitStore
		}
		lim, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 200, Burst: 10, Store: store})
		require.NoError(b, err)
		retrier, err := httpguard.NewRetrier(httpguard.DefaultRetryPolicy())
		require.NoError(b, err)
		clients[i] = &http.Client{Transport: httpguard.Chain(tr, retrier, lim)}
	}
	body := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 50 {
		hc := clients[i%replicas]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.BaseURL()+"/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					continue // the deadline, or a refusal as it nears
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	st := srv.Stats()
	all := st.Status[http.StatusOK] + st.Status[http.StatusTooManyRequests]
	return float64(st.Status[http.StatusOK]) / d.Seconds(), 100 * float64(st.Status[http.StatusTooManyRequests]) / float64(max(all, 1))
}

// While Redis is away, the local share adapts alone: a 429 still slows the
// process down, and a store failing closed says Redis is unavailable.
func TestLimitStoreSlowsDownLocallyWhileRedisIsAway(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.5, ProbeInterval: time.Minute, OnFailover: events.record})
	closed := newLimitStore(t, srv.client(t), LimitStoreConfig{FailClosed: true, ProbeInterval: time.Minute})
	ctx := context.Background()
	reqs := httpguard.BucketLimit{Rate: 100, Burst: 8}
	_, _, err := s.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
	require.NoError(t, err)

	srv.kill()
	_, _, err = s.Take(ctx, "k", reqs, httpguard.BucketLimit{}, 0)
	require.NoError(t, err)
	require.True(t, events.next(t).Down)
	ar, _, err := s.SlowDown(ctx, "k", time.Millisecond, 100, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 1, ar.Decreases)
	got, err := s.AdaptiveRate(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, ar.Decreases, got.Decreases, "read from the local share")

	_, _, err = closed.SlowDown(ctx, "k", time.Millisecond, 100, 0)
	assert.ErrorIs(t, err, ErrUnavailable)
}
