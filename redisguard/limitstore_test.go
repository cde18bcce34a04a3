package redisguard

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newLimitStore returns a limit store of c on client, under a Name no
// other store of the test run uses unless c sets one; it is closed when
// the test ends. Unless c sets one, its Timeout is testTimeout.
func newLimitStore(t testing.TB, client redis.UniversalClient, c LimitStoreConfig) *LimitStore {
	t.Helper()
	if c.Name == "" {
		c.Name = fmt.Sprintf("%s-%d", t.Name(), storeNames.Add(1))
	}
	if c.Timeout == 0 {
		c.Timeout = testTimeout
	}
	s, err := NewLimitStore(client, c)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

func TestLimitStoreConforms(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	storetest.LimitStore(t, func(t *testing.T) httpguard.LimitStore { return newLimitStore(t, client, LimitStoreConfig{}) })
}

// Each call touches one key (the keys of a limiter key share a hash tag
// besides), so a Cluster serves the store as a single node does. The
// suite's timed parts are left to the single node: a Cluster client's
// extra work only makes them slower on a loaded machine.
func TestLimitStoreWorksOnACluster(t *testing.T) {
	s := newLimitStore(t, startRedis(t, redisOptions{cluster: true}).client(t), LimitStoreConfig{})
	ctx := context.Background()
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 2}
	wait, _ := take(t, s, "k", reqs, perSecond, 100)
	require.Zero(t, wait)
	require.NoError(t, s.Adjust(ctx, "k", perSecond, -40))
	_, by := take(t, s, "k", reqs, perSecond, 41)
	assert.Equal(t, httpguard.ThrottleTokens, by, "40 tokens given back, not 41")
	wait, _ = take(t, s, "k", reqs, perSecond, 40)
	assert.Zero(t, wait, "the request the tokens refused was given back")
	_, by = take(t, s, "k", reqs, noLimit, 0)
	assert.Equal(t, httpguard.ThrottleRequests, by)
	require.NoError(t, s.Pause(ctx, "k", time.Minute))
	_, by = take(t, s, "k", noLimit, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by)
	assert.False(t, s.link.isDown())
}

var (
	perSecond = httpguard.BucketLimit{Rate: 1, Burst: 100}
	noLimit   = httpguard.BucketLimit{}
)

// assertWaitRefilled asserts that wait is at most full, the wait of a
// bucket short of what it refills in full, and at least full less elapsed,
// a bound on the time the bucket has refilled since it was taken from: on
// a loaded machine elapsed can be a good part of full.
func assertWaitRefilled(t *testing.T, wait, full, elapsed time.Duration) {
	t.Helper()
	const slack = 10 * time.Millisecond // the stores round to the millisecond
	assert.LessOrEqual(t, wait, full+slack)
	assert.GreaterOrEqual(t, wait, full-elapsed-slack, "%v less the %v since", full, elapsed)
}

func take(t *testing.T, s httpguard.LimitStore, key string, reqs, toks httpguard.BucketLimit, n int64) (time.Duration, httpguard.ThrottleReason) {
	t.Helper()
	wait, by, err := s.Take(context.Background(), key, reqs, toks, n)
	require.NoError(t, err)
	return wait, by
}

// Adjust writes a bucket as redis_rate keeps it: redis_rate itself, on the
// same key, sees the tokens given back and taken.
func TestLimitStoreAdjustKeepsRedisRatesFormat(t *testing.T) {
	onEachServer(t, adjustKeepsRedisRatesFormat)
}

func adjustKeepsRedisRatesFormat(t *testing.T, newClient func() redis.UniversalClient) {
	client := newClient()
	s := newLimitStore(t, client, LimitStoreConfig{})
	ctx := context.Background()
	rate := redis_rate.NewLimiter(client)
	lim := redis_rate.Limit{Rate: 1, Period: time.Second, Burst: 100} // perSecond, as the store passes it
	tokens := s.keys.of("k").tokens

	wait, _ := take(t, s, "k", noLimit, perSecond, 100)
	require.Zero(t, wait)
	require.NoError(t, s.Adjust(ctx, "k", perSecond, -30))
	res, err := rate.AllowN(ctx, tokens, lim, 31)
	require.NoError(t, err)
	assert.Zero(t, res.Allowed, "30 given back, not 31")
	res, err = rate.AllowN(ctx, tokens, lim, 30)
	require.NoError(t, err)
	assert.Equal(t, 30, res.Allowed, "redis_rate takes the 30 given back")

	require.NoError(t, rate.Reset(ctx, tokens))
	require.NoError(t, s.Adjust(ctx, "k", perSecond, 60))
	res, err = rate.AllowN(ctx, tokens, lim, 40)
	require.NoError(t, err)
	assert.Equal(t, 40, res.Allowed, "the debit of 60 left 40")
	assert.InDelta(t, 100, res.ResetAfter.Seconds(), 1)
}

// Take's script for the tokens (which tells a turn's end, as redis_rate's
// does not) keeps the bucket as redis_rate's AllowN does: each sees what
// the other took, so that stores of a release on redis_rate's script
// share the bucket with it during a rolling deploy.
func TestLimitStoreTakeKeepsRedisRatesFormat(t *testing.T) {
	onEachServer(t, takeKeepsRedisRatesFormat)
}

func takeKeepsRedisRatesFormat(t *testing.T, newClient func() redis.UniversalClient) {
	client := newClient()
	s := newLimitStore(t, client, LimitStoreConfig{})
	ctx := context.Background()
	rate := redis_rate.NewLimiter(client)
	lim := redis_rate.Limit{Rate: 1, Period: time.Second, Burst: 100} // perSecond, as the store passes it
	tokens := s.keys.of("k").tokens

	start := time.Now()
	res, err := rate.AllowN(ctx, tokens, lim, 40)
	require.NoError(t, err)
	require.Equal(t, 40, res.Allowed)
	wait, by := take(t, s, "k", noLimit, perSecond, 61)
	assert.Equal(t, httpguard.ThrottleTokens, by, "the store sees the 40 redis_rate took")
	// One token short, less what refilled since redis_rate took the 40.
	assertWaitRefilled(t, wait, time.Second, time.Since(start))
	wait, _ = take(t, s, "k", noLimit, perSecond, 60)
	require.Zero(t, wait)
	res, err = rate.AllowN(ctx, tokens, lim, 1)
	require.NoError(t, err)
	assert.Zero(t, res.Allowed, "redis_rate sees the 60 the store took")
	assert.InDelta(t, 100, res.ResetAfter.Seconds(), 1)
}

// One process's pause stops the others: on miniredis too, whose keys do
// not expire by themselves.
func TestLimitStorePauseHoldsInEveryStoreOfTheName(t *testing.T) {
	onEachServer(t, pauseHoldsInEveryStore)
}

func pauseHoldsInEveryStore(t *testing.T, newClient func() redis.UniversalClient) {
	a := newLimitStore(t, newClient(), LimitStoreConfig{Name: "shared"})
	b := newLimitStore(t, newClient(), LimitStoreConfig{Name: "shared"})
	other := newLimitStore(t, newClient(), LimitStoreConfig{Name: "another account"})
	// A pause long enough to outlast a loaded machine's round trips (the
	// whole suite under -race on 2 busy cores took over 100ms here).
	require.NoError(t, a.Pause(context.Background(), "api gpt", 10*time.Second))

	left, by := take(t, b, "api gpt", perSecond, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by)
	assert.Greater(t, left, 5*time.Second)
	assert.LessOrEqual(t, left, 10*time.Second)
	wait, _ := take(t, b, "api other-model", perSecond, noLimit, 0)
	assert.Zero(t, wait, "another key is not paused")
	wait, _ = take(t, other, "api gpt", perSecond, noLimit, 0)
	assert.Zero(t, wait, "another Name is another account")

	require.NoError(t, a.Pause(context.Background(), "api short", 100*time.Millisecond))
	left, _ = take(t, b, "api short", perSecond, noLimit, 0)
	time.Sleep(left) // what the pause had left (rounded up) when b read it, if anything
	wait, _ = take(t, b, "api short", perSecond, noLimit, 0)
	assert.Zero(t, wait, "the pause ended")
}

// Every call touches the keys of one limiter key: on a Cluster they must
// be in one slot, whatever the names.
func TestLimitStoreKeysOfALimiterKeyShareOneHashTag(t *testing.T) {
	for _, name := range []string{"openai", "with:colons", "with{braces}", "}", "{"} {
		for _, key := range []string{"api.openai.com gpt-4o", "", "{x}"} {
			k := newLimitKeys("httpguard", name, key)
			keys := []string{k.requests, k.tokens, k.rateRequests, k.rateTokens, k.pause, k.credits}
			for _, key := range keys {
				assert.Equal(t, hashTag(keys[0]), hashTag(key), "%q and %q", keys[0], key)
			}
		}
	}
}

// What Redis holds of a limiter is hashes of its keys, IDs and numbers:
// nothing of the requests, even with a key made of a secret.
func TestLimitStoreKeepsNothingOfTheRequests(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newLimitStore(t, client, LimitStoreConfig{Name: "private"})
	api := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(time.Minute)))
	const secret, prompt = "sk-secret-4242", "my confidential prompt"
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 1, Burst: 5, TokensPerMinute: 100_000, Store: s,
		Key: func(r *http.Request, model string) string { return r.Header.Get("Authorization") + " " + model }})
	require.NoError(t, err)
	hc := &http.Client{Transport: httpguard.Chain(api.Client().Transport, l)}
	for range 2 { // the first answer is a 429 that pauses the key; the second is refused
		req, err := http.NewRequest("POST", api.BaseURL()+"/chat/completions", strings.NewReader(strings.Replace(chatBody(10), "hello", prompt, 1)))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}

	ctx := context.Background()
	keys, err := client.Keys(ctx, "*").Result()
	require.NoError(t, err)
	layout := regexp.MustCompile(`^(rate:\{httpguard:private:[0-9a-f]{24}\}:(requests|tokens)|\{httpguard:private:[0-9a-f]{24}\}:(pause|credits|adapt)|\{httpguard:private\}:replicas)$`)
	var stored strings.Builder
	for _, key := range keys {
		assert.Regexp(t, layout, key)
		switch typ := client.Type(ctx, key).Val(); typ {
		case "string":
			stored.WriteString(client.Get(ctx, key).Val() + "\n")
		case "zset":
			for _, z := range client.ZRangeWithScores(ctx, key, 0, -1).Val() {
				stored.WriteString(z.Member.(string) + "\n")
			}
		case "hash": // the adaptive rate: its fields are the script's names
			for _, v := range client.HGetAll(ctx, key).Val() {
				stored.WriteString(v + "\n")
			}
		default:
			t.Errorf("%s is a %s", key, typ)
		}
	}
	assert.Len(t, keys, 5, "requests, tokens, pause, adaptive rate, replicas: %v", keys)
	assert.Regexp(t, `^([0-9.]+\n|[0-9a-f]{16}\n)+$`, stored.String(), "numbers and store IDs only")
	assert.NotContains(t, stored.String()+strings.Join(keys, " "), "secret")
	assert.NotContains(t, stored.String(), "confidential")
}

func TestLimitStoreFailsOpenToItsShareAndRecoversByItself(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	var logs syncBuffer
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: 10 * time.Millisecond,
		OnFailover: events.record, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 8}
	wait, _ := take(t, s, "k", reqs, noLimit, 0)
	require.Zero(t, wait)

	killed := time.Now()
	srv.kill()
	for i := range 2 {
		wait, _ := take(t, s, "k", reqs, noLimit, 0)
		assert.Zero(t, wait, "request %d: a quarter of the burst of 8 is 2, in the local share", i+1)
	}
	down := events.next(t)
	assert.True(t, down.Down)
	assert.True(t, down.FailOpen)
	assert.Equal(t, `limiter "`+s.cfg.Name+`"`, down.Store)
	wait, by := take(t, s, "k", reqs, noLimit, 0)
	assert.Equal(t, httpguard.ThrottleRequests, by)
	// A quarter of the rate, a request every 4s, less what refilled since
	// the local share began.
	assertWaitRefilled(t, wait, 4*time.Second, time.Since(killed))
	assert.Contains(t, logs.String(), "Redis unavailable: admitting from its local share (fail open)")

	srv.restart()
	up := events.next(t)
	assert.False(t, up.Down)
	assert.Positive(t, up.Outage)
	for i := range 7 {
		wait, _ := take(t, s, "k", reqs, noLimit, 0)
		assert.Zero(t, wait, "request %d: back on Redis, which had one request of the 8 taken", i+1)
	}
	_, by = take(t, s, "k", reqs, noLimit, 0)
	assert.Equal(t, httpguard.ThrottleRequests, by)
	assert.Contains(t, logs.String(), "Redis is back")
}

// By default a process keeps 1/N of each limit, N being the stores of the
// Name that used Redis lately.
func TestLimitStoreFailsOpenToOneNthWithNStores(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	var stores []*LimitStore
	for range 4 {
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "four", ProbeInterval: 10 * time.Millisecond})
		stores = append(stores, s)
		take(t, s, "k", noLimit, noLimit, 0)
	}
	assert.Equal(t, 0.5, stores[1].share(), "it counted itself before the last two came")
	assert.Equal(t, 0.25, stores[3].share())
	require.NoError(t, stores[0].countIn(context.Background()))
	assert.Equal(t, 0.25, stores[0].share(), "and each counts again every 5s")

	require.NoError(t, stores[3].Close())
	require.NoError(t, stores[0].countIn(context.Background()))
	assert.InDelta(t, 1.0/3, stores[0].share(), 1e-9, "a closed store counts out")
}

// A Redis that hangs fails the store over within Timeout: the request is
// paced by the local share instead of waiting for the client's own
// ReadTimeout (3s).
func TestLimitStoreFailsOverAtTimeoutWhenRedisHangs(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: hangingRedis(t)})
	t.Cleanup(func() { client.Close() })
	events := make(failovers, 10)
	s := newLimitStore(t, client, LimitStoreConfig{Timeout: 50 * time.Millisecond, ProbeInterval: time.Hour, OnFailover: events.record})
	start := time.Now()
	wait, _ := take(t, s, "k", perSecond, noLimit, 0)
	elapsed := time.Since(start)
	assert.Zero(t, wait)
	assert.Less(t, elapsed, time.Second)
	assert.ErrorContains(t, events.next(t).Err, "no answer within 50ms (Timeout)")
}

func TestLimitStoreFailsClosedWhenToldTo(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailClosed: true, ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	srv.kill()
	_, _, err := s.Take(context.Background(), "k", perSecond, noLimit, 0)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Regexp(t, `^redisguard: limiter ".*": Redis has not answered since \S+ \(.*\); refusing every request \(fail closed\): redis unavailable$`, err.Error())
	assert.False(t, events.next(t).FailOpen)
	srv.restart()
	assert.False(t, events.next(t).Down)
	wait, _ := take(t, s, "k", perSecond, noLimit, 0)
	assert.Zero(t, wait)
}

// A pause told while Redis is away holds in the process, and reaches the
// fleet when Redis is back, for the time it has left.
func TestLimitStoreSetsThePausesItKeptWhenRedisIsBack(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "pauses", ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	b := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "pauses"})
	ctx := context.Background()
	take(t, a, "k", perSecond, noLimit, 0)
	srv.kill()
	require.NoError(t, a.Pause(ctx, "k", 10*time.Second))
	require.True(t, events.next(t).Down)
	_, by := take(t, a, "k", perSecond, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by, "the local share holds the pause")

	srv.restart()
	require.False(t, events.next(t).Down)
	wait, by := take(t, b, "k", perSecond, noLimit, 0)
	assert.Equal(t, httpguard.ThrottlePaused, by, "the other store sees the pause")
	assert.Greater(t, wait, 9*time.Second)
}

// admissions records the calls in which a fleet's stores admitted
// requests: each was admitted at some moment between the call's start and
// its end.
type admissions struct {
	mu    sync.Mutex
	calls []call
}

type call struct{ start, end time.Time }

func (a *admissions) add(start, end time.Time) {
	a.mu.Lock()
	a.calls = append(a.calls, call{start, end})
	a.mu.Unlock()
}

// most returns the most requests certainly admitted in a window of w that
// starts at from or later (those whose whole call lies in it: a call slowed
// by a loaded machine does not crowd a window), and where that window
// starts.
func (a *admissions) most(from time.Time, w time.Duration) (int, time.Duration) {
	a.mu.Lock()
	calls := slices.Clone(a.calls)
	a.mu.Unlock()
	best, bestAt := 0, time.Duration(0)
	for _, c := range calls {
		if c.start.Before(from) {
			continue
		}
		n := 0
		for _, d := range calls {
			if !d.start.Before(c.start) && d.end.Sub(c.start) < w {
				n++
			}
		}
		if n > best {
			best, bestAt = n, c.start.Sub(from)
		}
	}
	return best, bestAt
}

// The fleet's rate holds across Redis's return, although its stores come
// back one after the other, each on its own probe: a store back on Redis
// used to take Redis's whole rate (and the fresh burst of a Redis that
// restarted empty) while the others still sent on their local shares.
// Three stores at 100 requests/s come back about 20 ms, 300 ms and 600 ms
// after their failover; no window after the restart admits more than
// rate·window + burst, and the shares' bursts (2 each) at most: a store
// slowed down on a loaded machine may save its share's and spend it just
// before it is back, while Redis saved its own, which the stores rejoining
// leave unused and the fleet spends once the last is back (51 in 400 ms,
// one run in ten). Without the rejoin, 66 were admitted in 400 ms (46 at
// most), 23 in 100 ms (16); with it 46 and 16.
// Once all are back, a store alone has Redis's whole rate again.
func TestLimitStoresComingBackOneByOneKeepTheFleetsRate(t *testing.T) {
	t.Run("Redis restarts empty", func(t *testing.T) { testComingBackOneByOne(t, redisOptions{}) })
	t.Run("Redis restarts with its data", func(t *testing.T) { testComingBackOneByOne(t, redisOptions{persist: true}) })
}

func testComingBackOneByOne(t *testing.T, o redisOptions) {
	srv := startRedis(t, o)
	const rate, burst = 100.0, 6
	reqs := httpguard.BucketLimit{Rate: rate, Burst: burst}
	var stores []*LimitStore
	var events []failovers
	for _, probe := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond} {
		e := make(failovers, 10)
		stores = append(stores, newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "rejoin", ProbeInterval: probe, OnFailover: e.record}))
		events = append(events, e)
	}
	ctx := context.Background()
	for _, s := range stores {
		require.NoError(t, s.countIn(ctx))
	}
	for _, s := range stores {
		require.NoError(t, s.countIn(ctx))
		require.Equal(t, 1.0/3, s.share(), "each store counted the three")
	}

	var got admissions
	var failed []error
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range stores {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					wait, _, err := s.Take(ctx, "k", reqs, noLimit, 0)
					switch {
					case err != nil:
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
						time.Sleep(time.Millisecond)
					case wait == 0:
						got.add(start, time.Now())
					default:
						time.Sleep(min(wait, 5*time.Millisecond))
					}
				}
			}()
		}
	}
	time.Sleep(100 * time.Millisecond)
	srv.kill()
	for _, e := range events {
		require.True(t, e.next(t).Down)
	}
	time.Sleep(50 * time.Millisecond) // on the local shares, past their first bursts
	restarted := time.Now()
	srv.restart()
	var back []time.Duration
	for _, e := range events {
		up := e.next(t)
		require.False(t, up.Down)
		back = append(back, time.Since(restarted).Round(time.Millisecond))
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Empty(t, failed)

	t.Logf("the stores came back %v after the restart", back)
	for _, w := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		n, at := got.most(restarted, w)
		bound := rate*w.Seconds() + burst
		t.Logf("at most %d admitted in %v (at %v after the restart); bound %.0f", n, w, at, bound)
		assert.LessOrEqual(t, float64(n), bound+3*2, "requests admitted in a window of %v, %v after the restart", w, at)
	}
	time.Sleep(time.Duration(burst * float64(time.Second) / rate)) // Redis's bucket fills up again
	for i := range burst {
		wait, _ := take(t, stores[0], "k", reqs, noLimit, 0)
		assert.Zero(t, wait, "request %d: all are back, the first store has Redis's whole burst of %d (its share's is 2)", i+1, burst)
	}
}

// A store that does not come back (its process died with Redis away) holds
// the others on their shares for the presence horizon at most: 3 counts
// in, by which time it no longer counts. So also with a ProbeInterval
// longer than the horizon, which kept a store on its share until its next
// check of the others.
func TestLimitStoreRejoinsAloneOnceAMissingStoreNoLongerCounts(t *testing.T) {
	t.Run("ProbeInterval 10ms", func(t *testing.T) { testRejoinsAlone(t, 10*time.Millisecond) })
	t.Run("ProbeInterval 1m", func(t *testing.T) { testRejoinsAlone(t, time.Minute) })
}

func testRejoinsAlone(t *testing.T, probe time.Duration) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "one-gone", ProbeInterval: probe, OnFailover: events.record})
	a.link.interval = 10 * time.Millisecond // its first probe soon; its checks once back ProbeInterval apart
	gone := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "one-gone"})
	const every = 200 * time.Millisecond
	a.every = every
	ctx := context.Background()
	require.NoError(t, gone.countIn(ctx))
	require.NoError(t, a.countIn(ctx))
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 4}

	srv.kill()
	take(t, a, "k", noLimit, noLimit, 0)
	require.True(t, events.next(t).Down)
	srv.restart()
	up := events.next(t)
	require.False(t, up.Down)
	back := time.Now()
	for i := range 2 {
		wait, _ := take(t, a, "k", reqs, noLimit, 0)
		assert.Zero(t, wait, "request %d: in its half of the burst of 4", i+1)
	}
	wait, _ := take(t, a, "k", reqs, noLimit, 0)
	assert.Positive(t, wait, "back on Redis, the store still keeps to its half while the other may be on its own")
	require.Less(t, time.Since(back), 3*every, "the test was too slow to see the horizon")

	time.Sleep(time.Until(back.Add(3*every + 20*time.Millisecond)))
	for i := range 2 {
		wait, _ := take(t, a, "k", reqs, noLimit, 0)
		assert.Zero(t, wait, "request %d: the other no longer counts; Redis's bucket has 2 of 4 left", i+1)
	}
	wait, _ = take(t, a, "k", reqs, noLimit, 0)
	assert.Positive(t, wait, "Redis took the first two too")
}

func TestNewLimitStoreRejectsInvalidConfig(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { client.Close() })
	for _, tc := range []struct {
		c    LimitStoreConfig
		want string
	}{
		{LimitStoreConfig{}, "Name is required"},
		{LimitStoreConfig{Name: "openai", Prefix: "acme:prod"}, "Prefix must not hold ':'"}, // {acme:prod:openai} is also Prefix acme, Name prod:openai
		{LimitStoreConfig{Name: "a}b"}, "Name must not hold '{' or '}'"},
		{LimitStoreConfig{Name: "n", Timeout: -1}, "Timeout must be >= 0"},
		{LimitStoreConfig{Name: "n", FailOpenShare: 1.5}, "FailOpenShare must be in [0, 1]"},
		{LimitStoreConfig{Name: "n", FailOpenShare: math.NaN()}, "FailOpenShare must be in [0, 1]"},
		{LimitStoreConfig{Name: "n", FailOpenShare: 0.5, FailClosed: true}, "FailOpenShare must be 0 with FailClosed"},
		{LimitStoreConfig{Name: "n", ProbeInterval: -1}, "ProbeInterval must be >= 0"},
	} {
		_, err := NewLimitStore(client, tc.c)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redisguard: limit store: "+tc.want)
	}
	_, err := NewLimitStore(nil, LimitStoreConfig{Name: "n"})
	assert.ErrorContains(t, err, "client is nil")
}
