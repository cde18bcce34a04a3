package redisguard

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller that cancels its context (no deadline) while Redis accepts the
// connection and never answers, on a client with ContextTimeoutEnabled:
// go-redis follows a context's deadline, not its cancellation, so the call
// went on until the store's Timeout (1s here) before the caller heard of
// its own cancel. It now returns at once, with context.Canceled, and the
// cancel is not counted against Redis (the store's own check, a Timeout
// later, is: see the next test).
func TestACancelledCallerDoesNotWaitForTheTimeoutOfAStalledRedis(t *testing.T) {
	addr := hangingRedis(t)
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	const timeout = time.Second
	b := newStore(t, client, BudgetStoreConfig{Timeout: timeout, ProbeInterval: time.Hour})
	l := newLimitStore(t, client, LimitStoreConfig{Timeout: timeout, ProbeInterval: time.Hour})
	calls := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Totals", func(ctx context.Context) error { _, _, err := b.Totals(ctx, "lifetime"); return err }},
		{"Renew", func(ctx context.Context) error { return b.Renew(ctx, "lifetime", []uint64{1}, time.Minute) }},
		{"Take", func(ctx context.Context) error { _, _, err := l.Take(ctx, "k", noLimit, noLimit, 0); return err }},
		{"Pause", func(ctx context.Context) error { return l.Pause(ctx, "k", time.Second) }},
		{"SlowDown", func(ctx context.Context) error { _, err := l.SlowDown(ctx, "k", 0, 1); return err }},
		{"Reserve", func(ctx context.Context) error { _, err := b.Reserve(ctx, lifetime(1, 1), 100); return err }},
	}
	for _, c := range calls {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		err := c.do(ctx)
		elapsed := time.Since(start)
		cancel()
		require.Error(t, err, c.name)
		assert.ErrorIs(t, err, context.Canceled, c.name)
		assert.Less(t, elapsed, timeout/2, "%s: the caller's cancel waited for the store's Timeout", c.name)
		assert.False(t, b.link.isDown() || l.link.isDown(), "%s: the caller, not Redis, ended the call", c.name)
	}
	l.nextBeat.Store(0) // Close has nothing to count out of a Redis that hangs
}

// Every caller's deadline (30ms) is shorter than the store's Timeout
// (300ms), and Redis stalls (accepts, never answers): each call was cut
// short by its caller, which says nothing against Redis, so the store never
// failed over, and every request waited its whole deadline and failed, for
// as long as Redis stalled. Now a call cut short before Redis answered has
// the store ask Redis itself, on a call bounded by its Timeout alone: that
// one fails, and the store fails over to its local share.
func TestShortCallerDeadlinesStillFailAStalledRedisOver(t *testing.T) {
	addr := hangingRedis(t)
	for _, follows := range []bool{true, false} {
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: follows, MaxRetries: -1})
		t.Cleanup(func() { client.Close() })
		const timeout = 300 * time.Millisecond
		events := make(failovers, 10)
		l := newLimitStore(t, client, LimitStoreConfig{Timeout: timeout, ProbeInterval: time.Hour, OnFailover: events.record})
		failed := 0
		start := time.Now()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			wait, _, err := l.Take(ctx, "k", noLimit, noLimit, 0)
			cancel()
			if err == nil {
				assert.Zero(t, wait)
				break
			}
			require.ErrorIs(t, err, context.DeadlineExceeded)
			failed++
			if time.Since(start) > 10*timeout {
				t.Fatalf("ContextTimeoutEnabled %v: after %v and %d requests that waited their whole deadline and failed, the store has not failed over",
					follows, time.Since(start).Round(time.Millisecond), failed)
			}
		}
		e := events.next(t)
		assert.True(t, e.Down)
		assert.True(t, errors.Is(e.Err, context.DeadlineExceeded) || e.Err != nil)
		t.Logf("ContextTimeoutEnabled %v: failed over after %v, %d requests failed meanwhile (%v)", follows,
			time.Since(start).Round(time.Millisecond), failed, e.Err)
		l.nextBeat.Store(0)
	}
}

// A BudgetStore with a Logger reads Redis's eviction policy before its
// first reservation: on a Redis that does not answer, that read waited a
// whole Timeout, its failure was ignored, and the reservation waited a
// second Timeout: 2×Timeout for one call (and again at each reservation
// after Redis came back, until a read succeeded). The read's failure is
// now the reservation's: one Timeout, and the store fails over.
func TestAReservationOnAStalledRedisEndsWithinOneTimeoutWithALogger(t *testing.T) {
	addr := hangingRedis(t)
	for _, follows := range []bool{true, false} {
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: follows, MaxRetries: -1})
		t.Cleanup(func() { client.Close() })
		const timeout = 300 * time.Millisecond
		var log syncBuffer
		s := newStore(t, client, BudgetStoreConfig{Timeout: timeout, ProbeInterval: time.Hour,
			Logger: slog.New(slog.NewTextHandler(&log, nil))})
		start := time.Now()
		_, err := s.Reserve(context.Background(), lifetime(1, 1), 100)
		elapsed := time.Since(start)
		require.ErrorIs(t, err, ErrUnavailable)
		assert.Less(t, elapsed, timeout*3/2, "ContextTimeoutEnabled %v: one call, one Timeout", follows)
		assert.True(t, s.link.isDown())
	}
}

// stallHook makes the client's calls of one script hang, as on a Redis
// that stopped answering, until their context ends.
type stallHook struct {
	sha   string
	armed *atomic.Bool
}

func (h stallHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); h.armed.Load() && len(args) > 1 && args[1] == h.sha {
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

func (h stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A Take whose tokens refuse gives back the request it took, on a context
// without the caller's end: when Redis stalled right then, the caller
// waited the store's whole Timeout (1s here) past its own deadline (50ms).
// The refusal now stands when the caller's context ends, and the request
// is given back in the background, failing the store over if Redis does
// not answer it.
func TestATakeWhoseTokensRefuseDoesNotHoldTheCallerPastItsDeadline(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	client := redis.NewClient(testClientOptions(srv.Addr))
	t.Cleanup(func() { client.Close() })
	var armed atomic.Bool
	client.AddHook(stallHook{sha: adjustScript.Hash(), armed: &armed})
	const timeout = time.Second
	events := make(failovers, 10)
	l := newLimitStore(t, client, LimitStoreConfig{Timeout: timeout, ProbeInterval: time.Hour, OnFailover: events.record})
	reqs := httpguard.BucketLimit{Rate: 100, Burst: 10}
	toks := httpguard.BucketLimit{Rate: 1, Burst: 10}
	wait, _ := take(t, l, "k", reqs, toks, 10)
	require.Zero(t, wait)

	armed.Store(true) // Redis stalls at the give-back
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	wait, by, err := l.Take(ctx, "k", reqs, toks, 5)
	elapsed := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, httpguard.ThrottleTokens, by)
	assert.NotZero(t, wait)
	assert.Less(t, elapsed, timeout/2, "the caller waited for the give-back past its deadline")
	e := events.next(t)
	assert.True(t, e.Down, "the give-back Redis did not answer fails the store over")
	armed.Store(false)
}
