package redisguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failovers collects a store's FailoverEvents.
type failovers chan FailoverEvent

func (f failovers) record(e FailoverEvent) { f <- e }

func (f failovers) next(t *testing.T) FailoverEvent {
	t.Helper()
	select {
	case e := <-f:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no failover event")
		return FailoverEvent{}
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var lifetime = func(id uint64, amount httpguard.Money) httpguard.Reservation {
	return httpguard.Reservation{ID: id, Window: "lifetime", Amount: amount, Lease: time.Minute}
}

func TestBudgetStoreFailsClosedWhileRedisIsAwayAndRecoversByItself(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true}) // a Redis that restarts empty loses the window (see TestABudgetStoreNoticesARedisThatRestartedEmptyMidWindow)
	events := make(failovers, 10)
	var logs syncBuffer
	s := newStore(t, srv.client(t), BudgetStoreConfig{ProbeInterval: 10 * time.Millisecond, OnFailover: events.record,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	require.True(t, reserve(t, s, lifetime(1, 10), 100).OK)

	srv.kill()
	_, err := s.Reserve(ctx, lifetime(2, 10), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Regexp(t, `^redisguard: budget ".*": Redis has not answered since \S+ \(.*\); refusing what cannot be accounted for: redis unavailable$`, err.Error())
	down := events.next(t)
	assert.True(t, down.Down)
	assert.False(t, down.FailOpen)
	assert.Error(t, down.Err)
	_, _, err = s.Totals(ctx, "lifetime")
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, logs.String(), "Redis unavailable: refusing what it cannot account for (fail closed)")

	srv.restart()
	up := events.next(t)
	assert.False(t, up.Down)
	assert.Positive(t, up.Outage)
	assert.True(t, reserve(t, s, lifetime(3, 10), 100).OK, "back on Redis")
	assert.Contains(t, logs.String(), "Redis is back")
}

// The Budget refuses with the store's error, and sends nothing: no spend
// it cannot account for.
func TestBudgetRefusesWithoutSendingWhileRedisIsAway(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newStore(t, srv.client(t), BudgetStoreConfig{})
	api, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	t.Cleanup(api.Close)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: testPrices, Store: s})
	require.NoError(t, err)
	client := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}

	srv.kill()
	_, err = client.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(10)))
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "httpguard: budget: store: redisguard: budget")
	assert.True(t, httpguard.IsRefusal(errors.Unwrap(err)), "a refusal: the Retrier does not retry it")
	assert.Zero(t, api.Stats().Requests, "nothing was sent")
}

func TestBudgetStoreKeepsChargesWhileRedisIsAwayAndAddsThemWhenItIsBack(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	require.True(t, reserve(t, s, lifetime(1, 50), 100).OK)

	srv.kill()
	_, err := s.Settle(ctx, "lifetime", 1, 30)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "keeping the charge of $0.00000003 to add when it is back")
	require.True(t, events.next(t).Down)
	_, err = s.Settle(ctx, "lifetime", 99, 5) // while down: kept at once
	assert.ErrorContains(t, err, "keeping the charge of $0.000000005 to add when it is back")

	srv.restart()
	up := events.next(t)
	assert.Equal(t, httpguard.Money(35), up.Replayed)
	assert.Equal(t, [2]httpguard.Money{35, 0}, totals(t, s, "lifetime"), "charged, and the hold released")
}

func TestBudgetStoreFailsOpenToItsShareAndAddsWhatItSpentWhenRedisIsBack(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{FailOpenShare: 0.1, ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	ctx := context.Background()
	const limit = 1000
	require.True(t, reserve(t, s, lifetime(1, 900), limit).OK)
	_, err := s.Settle(ctx, "lifetime", 1, 900)
	require.NoError(t, err)

	srv.kill()
	local := reserve(t, s, lifetime(2, 60), limit)
	require.True(t, local.OK, "admitted from the local share: %+v", local)
	down := events.next(t)
	assert.True(t, down.Down)
	assert.True(t, down.FailOpen)
	assert.False(t, reserve(t, s, lifetime(3, 41), limit).OK, "the share is 100 a window: 60 held, 41 do not fit")
	require.NoError(t, s.Renew(ctx, "lifetime", []uint64{2}, time.Minute), "the local share renews its own leases")
	settled, err := s.Settle(ctx, "lifetime", 2, 40)
	require.NoError(t, err)
	assert.Equal(t, httpguard.Money(40), settled, "the local share's total")
	assert.Equal(t, [2]httpguard.Money{40, 0}, totals(t, s, "lifetime"))

	srv.restart()
	up := events.next(t)
	assert.Equal(t, httpguard.Money(40), up.Replayed)
	assert.Equal(t, [2]httpguard.Money{940, 0}, totals(t, s, "lifetime"), "what the share spent is in Redis")
	assert.False(t, reserve(t, s, lifetime(4, 61), limit).OK, "back on Redis: 60 remain")
	assert.True(t, reserve(t, s, lifetime(5, 60), limit).OK)
}

// A local reservation settled after Redis is back goes to Redis at once.
func TestBudgetStoreSettlesALocalReservationInRedisOnceBack(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{FailOpenShare: 0.5, ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	srv.kill()
	require.True(t, reserve(t, s, lifetime(1, 50), 100).OK)
	events.next(t)
	srv.restart()
	events.next(t)
	_, err := s.Settle(context.Background(), "lifetime", 1, 20)
	require.NoError(t, err)
	assert.Equal(t, [2]httpguard.Money{20, 0}, totals(t, s, "lifetime"))
}

// hangingRedis returns the address of a server that accepts connections
// and never answers.
func hangingRedis(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// A server that accepts connections and never answers: the calls end at
// Timeout, whether or not the client follows its contexts.
func TestBudgetStoreCallsEndAtTimeoutWhenRedisHangs(t *testing.T) {
	addr := hangingRedis(t)
	for _, follows := range []bool{false, true} {
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: follows})
		t.Cleanup(func() { client.Close() })
		s := newStore(t, client, BudgetStoreConfig{Timeout: 50 * time.Millisecond, ProbeInterval: time.Hour})
		start := time.Now()
		_, err := s.Reserve(context.Background(), lifetime(1, 1), 100)
		elapsed := time.Since(start)
		require.ErrorIs(t, err, ErrUnavailable)
		assert.Contains(t, err.Error(), "no answer within 50ms (Timeout)")
		assert.Less(t, elapsed, time.Second, "ContextTimeoutEnabled %v: the client's own ReadTimeout is 3s", follows)
	}
}

func TestBudgetStoreCloseSaysWhatRedisDidNotRecord(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	s, err := NewBudgetStore(client, BudgetStoreConfig{Name: "closing", ProbeInterval: time.Hour})
	require.NoError(t, err)
	require.True(t, reserve(t, s, lifetime(1, 50), 100).OK)
	srv.kill()
	_, err = s.Settle(context.Background(), "lifetime", 1, 30)
	require.ErrorIs(t, err, ErrUnavailable)
	err = s.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `redisguard: budget "closing": closed with $0.00000003 of charges Redis did not record`)
}

func TestBudgetStoreWatchWakesOnSettlementsInAnotherStore(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	a := newStore(t, srv.client(t), BudgetStoreConfig{Name: "watched"})
	b := newStore(t, srv.client(t), BudgetStoreConfig{Name: "watched"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := a.Watch(ctx, "lifetime")
	other := a.Watch(ctx, "another window")
	waitSubscribed(t, srv.client(t), a.channel)
	require.True(t, reserve(t, b, lifetime(1, 50), 100).OK)
	_, err := b.Settle(ctx, "lifetime", 1, 10)
	require.NoError(t, err)
	select {
	case <-w:
	case <-time.After(10 * time.Second):
		t.Fatal("the settlement in another store did not wake the watcher")
	}
	select {
	case <-other:
		t.Fatal("a watcher of another window woke")
	default:
	}
}

// waitSubscribed waits until someone subscribes to channel.
func waitSubscribed(t *testing.T, c redis.UniversalClient, channel string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := c.PubSubNumSub(context.Background(), channel).Result()
		if err == nil && n[channel] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody subscribed to %s: %v", channel, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// A reservation follows the newest window when another process opened a
// newer one meanwhile, up to maxMoves times; more means windows shorter
// than a round trip to Redis (a Window of a millisecond, under load).
// Redis answered every call: that reservation fails, but the store must
// not take it for an outage. It did: the error went to the link as a
// failed call, and the store failed over for a ProbeInterval (refusing
// every reservation when failing closed, admitting from its local share
// when failing open), logging and telling OnFailover that Redis was away.
func TestABudgetStoreStaysOnRedisWhenWindowsMoveFasterThanAReservation(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := srv.client(t)
	events := make(failovers, 10)
	s := newStore(t, client, BudgetStoreConfig{OnFailover: events.record, ProbeInterval: time.Hour})
	other := newStore(t, srv.client(t), BudgetStoreConfig{Name: s.cfg.Name}) // another process, opening a newer window before each call of s
	start := time.Now().Add(-time.Hour).Truncate(time.Second)                // windows of a second, started on every clock
	var opened atomic.Uint64
	var moving atomic.Bool
	moving.Store(true)
	client.AddHook(beforeEachHook{cmd: "evalsha", f: func(ctx context.Context) {
		if moving.Load() {
			i := opened.Add(1)
			w := start.Add(time.Duration(i) * time.Second)
			res, err := other.Reserve(ctx, httpguard.Reservation{ID: 1000 + i, Window: fmt.Sprintf("w:%d", i), Start: w, End: w.Add(time.Second), Amount: 1}, 100)
			assert.NoError(t, err)
			assert.True(t, res.OK)
		}
	}})
	r := httpguard.Reservation{ID: 1, Window: "w:0", Start: start, End: start.Add(time.Second), Amount: 1, Lease: time.Minute}

	_, err := s.Reserve(context.Background(), r, 100)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "moved 100 times")
	assert.ErrorIs(t, err, ErrUnavailable, "this request cannot be accounted for")
	assert.False(t, s.link.isDown(), "Redis answered every call: the store stays on it")
	select {
	case e := <-events:
		t.Errorf("a failover event for a Redis that answered: %+v", e)
	default:
	}
	moving.Store(false)
	res := reserve(t, s, r, 100)
	assert.True(t, res.OK, "the next reservation goes to Redis at once: %+v", res)
}

// beforeEachHook runs f before each command named cmd a client sends.
type beforeEachHook struct {
	cmd string
	f   func(context.Context)
}

func (h beforeEachHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h beforeEachHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == h.cmd {
			h.f(ctx)
		}
		return next(ctx, cmd)
	}
}

func (h beforeEachHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
