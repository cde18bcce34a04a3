package redisguard

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strings"
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
	assert.InDelta(t, 4, wait.Seconds(), 0.1, "a quarter of the rate: a request every 4s")
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

func TestNewLimitStoreRejectsInvalidConfig(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { client.Close() })
	for _, tc := range []struct {
		c    LimitStoreConfig
		want string
	}{
		{LimitStoreConfig{}, "Name is required"},
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
