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
		{"SlowDown", func(ctx context.Context) error { _, _, err := l.SlowDown(ctx, "k", 0, 1, 0); return err }},
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

// scriptHook holds the client's calls of one script, while armed, until
// their context ends, as on a Redis that stopped answering. ended then
// ends the call; nil fails it with its context's error.
type scriptHook struct {
	sha   string
	armed *atomic.Bool
	ended func(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder) error
}

func (h scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); h.armed.Load() && len(args) > 1 && args[1] == h.sha {
			<-ctx.Done()
			if h.ended != nil {
				return h.ended(ctx, next, cmd)
			}
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

func (h scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// runLate is a scriptHook's ended that runs the call d after its context
// ended, as a command already on its way reaches a slow Redis late: the
// call still runs, whatever its caller does meanwhile. ran receives once
// it has.
func runLate(d time.Duration, ran chan<- struct{}) func(context.Context, redis.ProcessHook, redis.Cmder) error {
	return func(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder) error {
		time.Sleep(d)
		err := next(context.WithoutCancel(ctx), cmd)
		ran <- struct{}{}
		return err
	}
}

// hookedClient starts a Redis and returns a client of it whose calls of
// the script sha a scriptHook holds once armed is set, ended by ended.
func hookedClient(t *testing.T, sha string, ended func(context.Context, redis.ProcessHook, redis.Cmder) error) (client *redis.Client, armed *atomic.Bool) {
	t.Helper()
	srv := startRedis(t, redisOptions{})
	client = redis.NewClient(testClientOptions(srv.Addr))
	t.Cleanup(func() { client.Close() })
	armed = new(atomic.Bool)
	client.AddHook(scriptHook{sha: sha, armed: armed, ended: ended})
	return client, armed
}

// A Take whose tokens refuse gives back the request it took, on a context
// without the caller's end: when Redis stalled right then, the caller
// waited the store's whole Timeout (1s here) past its own deadline (50ms).
// The refusal now stands when the caller's context ends, and the request
// is given back in the background, failing the store over if Redis does
// not answer it.
func TestATakeWhoseTokensRefuseDoesNotHoldTheCallerPastItsDeadline(t *testing.T) {
	client, armed := hookedClient(t, adjustScript.Hash(), nil)
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

// A caller cancels a reservation whose script reaches Redis late (a slow
// Redis, a command already on its way): the store releases the
// reservation, since Redis may have made it, but sent the release at once,
// on another connection, where it ran first and released nothing; the
// reservation then ran and held its money for the rest of its lease, for
// an attempt never sent. The release now waits for the reservation's call
// to end (a Timeout at most).
func TestTheReleaseOfACancelledReservationDoesNotOvertakeIt(t *testing.T) {
	ran := make(chan struct{}, 1)
	client, armed := hookedClient(t, reserveScript.Hash(), runLate(50*time.Millisecond, ran))
	s := newStore(t, client, BudgetStoreConfig{Timeout: time.Second, ProbeInterval: time.Hour})
	require.True(t, reserve(t, s, lifetime(1, 10), 100).OK) // the scripts are loaded
	_, err := s.Settle(context.Background(), "lifetime", 1, 10)
	require.NoError(t, err)

	armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err = s.Reserve(ctx, lifetime(2, 40), 100)
	require.ErrorIs(t, err, context.Canceled)
	<-ran
	s.releasing.Wait()
	armed.Store(false)
	assert.Equal(t, [2]httpguard.Money{10, 0}, totals(t, s, "lifetime"), "the cancelled reservation holds nothing")
	assert.True(t, reserve(t, s, lifetime(3, 90), 100).OK, "90 of 100 are free")
}

// Two Redis outages back to back, two processes failing open on a fifth of
// a Limit of 100 each. Reservations taken on Redis before the first outage
// are settled during the second (a refund: 40 reserved, 10 charged) and
// after it; a local reservation of the first outage is settled during the
// second; a charge of the first outage is replayed between the two. Redis
// ends with exactly what was charged, holds nothing, and admits the rest
// of the Limit and no more: no credit lost or counted twice.
func TestBudgetCreditAcrossTwoOutages(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	ea, eb := make(failovers, 10), make(failovers, 10)
	cfg := func(e failovers) BudgetStoreConfig {
		return BudgetStoreConfig{Name: "two-outages", FailOpenShare: 0.2, ProbeInterval: 10 * time.Millisecond, OnFailover: e.record}
	}
	a := newStore(t, srv.client(t), cfg(ea))
	b := newStore(t, srv.client(t), cfg(eb))
	ctx := context.Background()
	const limit = 100
	settle := func(s *BudgetStore, id uint64, actual httpguard.Money) {
		t.Helper()
		s.Settle(ctx, "lifetime", id, actual) // kept while Redis is away: the error says so
	}
	down := func() {
		t.Helper()
		srv.kill()
		a.Renew(ctx, "lifetime", []uint64{1}, time.Minute)
		b.Renew(ctx, "lifetime", []uint64{2}, time.Minute)
		require.True(t, ea.next(t).Down)
		require.True(t, eb.next(t).Down)
	}
	up := func() (replayedA, replayedB httpguard.Money) {
		t.Helper()
		srv.restart()
		e, f := ea.next(t), eb.next(t)
		require.False(t, e.Down)
		require.False(t, f.Down)
		return e.Replayed, f.Replayed
	}

	require.True(t, reserve(t, a, lifetime(1, 40), limit).OK)
	require.True(t, reserve(t, b, lifetime(2, 30), limit).OK)

	down() // the first outage
	require.True(t, reserve(t, a, lifetime(11, 15), limit).OK, "a's share")
	require.True(t, reserve(t, b, lifetime(12, 20), limit).OK, "b's share")
	settle(a, 11, 12)
	ra, rb := up()
	assert.Equal(t, httpguard.Money(12), ra)
	assert.Zero(t, rb)
	assert.Equal(t, [2]httpguard.Money{12, 70}, totals(t, a, "lifetime"), "what a's share spent, and the holds of 1 and 2 again")

	down()            // the second
	settle(a, 1, 10)  // taken before the first outage: 30 back
	settle(b, 12, 20) // b's share's, of the first outage
	assert.True(t, reserve(t, a, lifetime(13, 8), limit).OK, "a's share spent 12 of its 20 in this window")
	assert.False(t, reserve(t, a, lifetime(14, 1), limit).OK, "12 spent and 8 held of 20")
	ra, rb = up()
	assert.Equal(t, httpguard.Money(10), ra)
	assert.Equal(t, httpguard.Money(20), rb)

	settle(b, 2, 30) // taken before the first outage
	settle(a, 13, 8) // a's share's, of the second
	assert.Equal(t, [2]httpguard.Money{80, 0}, totals(t, b, "lifetime"), "12+10+20+30+8 charged, nothing held")
	assert.False(t, reserve(t, b, lifetime(21, 21), limit).OK, "80 of 100 charged")
	assert.True(t, reserve(t, b, lifetime(22, 20), limit).OK)
}
