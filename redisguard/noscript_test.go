package redisguard

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Redis that does not have a store's scripts (a fresh one, or after
// SCRIPT FLUSH, a restart or a failover to a replica) answers EVALSHA with
// NOSCRIPT, and go-redis's Script.Run then sends the script whole (EVAL):
// a second turn at the client's connections, behind every caller queued
// there meanwhile. In a burst larger than the pool, every EVALSHA was
// answered NOSCRIPT and every EVAL timed out in the queue, so Redis never
// got the script, and as the call's last answer was no answer, the store
// failed over on a Redis that answered every command. 400 reservations at
// once on a client of two connections (as in budgetburst_test.go), right
// after SCRIPT FLUSH or on a fresh Redis: none admitted, and the store
// failed over, where with the scripts cached 119 to 145 were admitted and
// the rest failed alone. 400 Takes likewise failed a LimitStore over, open
// to its local share. The store now loads its scripts itself, in one
// pipeline, before its first script and once after a NOSCRIPT answer, the
// calls waiting for that load; and a NOSCRIPT answer counts as Redis's.

// reservationBurst is what came of a burst of reservations.
type reservationBurst struct {
	admitted, queued, other atomic.Int64
	otherErr                atomic.Value // the first other failure's error
}

// reserveBurst sends burstCallers reservations of 1 at once on s, with IDs
// from first, and waits for them and for the releases of those refused.
// Every reservation fits the Limit: each is admitted, or fails alone after
// waiting for the client's connections (a queuedError).
func reserveBurst(t *testing.T, s *BudgetStore, first uint64) *reservationBurst {
	b := new(reservationBurst)
	var wg sync.WaitGroup
	for i := range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Reserve(context.Background(), lifetime(first+uint64(i), 1), 10*burstCallers)
			switch {
			case err == nil:
				if assert.True(t, res.OK, "the Limit has room for every reservation") {
					b.admitted.Add(1)
				}
			case errors.As(err, new(queuedError)):
				assert.ErrorIs(t, err, ErrUnavailable)
				b.queued.Add(1)
			default:
				b.otherErr.CompareAndSwap(nil, err)
				b.other.Add(1)
			}
		}()
	}
	wg.Wait()
	s.releasing.Wait()
	if n := b.other.Load(); n > 0 {
		t.Errorf("%d reservations failed for another reason than their wait for a connection, the first with: %v", n, b.otherErr.Load())
	}
	return b
}

// noFailover fails the test when events holds a failover.
func noFailover(t *testing.T, events failovers) {
	t.Helper()
	for len(events) > 0 {
		if e := <-events; e.Down {
			t.Errorf("Redis answered, yet the store failed over: %v", e.Err)
		}
	}
}

func TestABurstOfReservationsOnAFreshRedisDoesNotFailTheStoreOver(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	b := reserveBurst(t, s, 1)
	t.Logf("%d of %d reservations admitted, %d failed alone", b.admitted.Load(), burstCallers, b.queued.Load())
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	assert.Positive(t, b.admitted.Load(), "the scripts are loaded once, and the burst runs on them")
	assert.Zero(t, commandCalls(t, srv, "eval"), "no call sent its script whole")
	assert.Equal(t, int64(5), commandCalls(t, srv, "script|load"), "the five scripts, loaded once")
	assert.Equal(t, [2]httpguard.Money{0, httpguard.Money(b.admitted.Load())}, totals(t, s, "lifetime"),
		"Redis holds the admitted reservations' money, and only theirs")
}

func TestABurstOfReservationsAfterScriptFlushDoesNotFailTheStoreOver(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 1), 10*burstCallers).OK)
	_, err := s.Settle(context.Background(), "lifetime", 1, 1)
	require.NoError(t, err)
	require.NoError(t, srv.client(t).ScriptFlush(context.Background()).Err())

	b := reserveBurst(t, s, 2)
	t.Logf("right after SCRIPT FLUSH: %d of %d reservations admitted, %d failed alone", b.admitted.Load(), burstCallers, b.queued.Load())
	noFailover(t, events)
	require.False(t, s.link.isDown())
	again := reserveBurst(t, s, 2+burstCallers)
	t.Logf("the next burst: %d of %d reservations admitted, %d failed alone", again.admitted.Load(), burstCallers, again.queued.Load())
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	assert.Positive(t, again.admitted.Load(), "the scripts were loaded again")
	assert.Equal(t, [2]httpguard.Money{1, httpguard.Money(b.admitted.Load() + again.admitted.Load())}, totals(t, s, "lifetime"),
		"Redis holds the admitted reservations' money, and only theirs")
}

// A Redis restarted has lost the scripts, even with its data (AOF). The
// store fails over at its first call there (its connections are gone),
// and its probe finds Redis back: it loads the scripts before its callers
// come back, so that their burst does not find them missing and fail it
// over again.
func TestAStoreBackFromARestartedRedisDoesNotFailOverAgainInABurst(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, ProbeInterval: 10 * time.Millisecond, OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 1), 10*burstCallers).OK)
	_, err := s.Settle(context.Background(), "lifetime", 1, 1)
	require.NoError(t, err)

	srv.kill()
	_, err = s.Reserve(context.Background(), lifetime(2, 1), 10*burstCallers)
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, events.next(t).Down)
	srv.restart()
	require.False(t, events.next(t).Down, "the store is back on Redis")

	b := reserveBurst(t, s, 3)
	t.Logf("after the restart: %d of %d reservations admitted, %d failed alone", b.admitted.Load(), burstCallers, b.queued.Load())
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	assert.Positive(t, b.admitted.Load(), "the probe loaded the scripts")
}

// A store that called Redis neither while it restarted nor since (go-redis
// dials again for a connection it lost) learns that the scripts are gone
// from the NOSCRIPT answers of its next burst: 400 reservations there
// failed it over, none admitted. They now fail alone, and the burst after
// admits.
func TestABurstAfterARestartTheStoreDidNotSeeDoesNotFailItOver(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 1), 10*burstCallers).OK)
	_, err := s.Settle(context.Background(), "lifetime", 1, 1)
	require.NoError(t, err)
	srv.kill()
	srv.restart()

	b := reserveBurst(t, s, 2)
	t.Logf("right after the restart: %d of %d reservations admitted, %d failed alone", b.admitted.Load(), burstCallers, b.queued.Load())
	noFailover(t, events)
	require.False(t, s.link.isDown())
	again := reserveBurst(t, s, 2+burstCallers)
	t.Logf("the next burst: %d of %d reservations admitted, %d failed alone", again.admitted.Load(), burstCallers, again.queued.Load())
	noFailover(t, events)
	assert.Positive(t, again.admitted.Load(), "the scripts were loaded again")
}

// takeBurst sends burstCallers Takes at once on s's key "k", and returns
// how many failed.
func takeBurst(s *LimitStore, reqs httpguard.BucketLimit) (failed int64) {
	var n atomic.Int64
	var wg sync.WaitGroup
	for range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, _, err := s.TakeTurn(context.Background(), "k", reqs, noLimit, 0); err != nil {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

func TestABurstOfTakesWithoutTheScriptsDoesNotFailTheStoreOver(t *testing.T) {
	for _, flush := range []bool{false, true} {
		name := "fresh"
		if flush {
			name = "flushed"
		}
		t.Run(name, func(t *testing.T) {
			srv := startRedis(t, redisOptions{})
			events := make(failovers, 10)
			s := newLimitStore(t, queueClient(t, srv), LimitStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
			reqs := httpguard.BucketLimit{Rate: 1, Burst: 5}
			if flush {
				take(t, s, "warm", reqs, noLimit, 0)
				require.NoError(t, srv.client(t).ScriptFlush(context.Background()).Err())
			}
			failed := takeBurst(s, reqs)
			t.Logf("%d of %d Takes failed alone", failed, burstCallers)
			noFailover(t, events)
			assert.False(t, s.link.isDown())
		})
	}
}

// commandCalls returns how often srv ran command (as INFO commandstats
// names it, such as "eval" or "script|load").
func commandCalls(t *testing.T, srv *redisServer, command string) int64 {
	t.Helper()
	info, err := srv.client(t).Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls="); ok {
			n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// A Take that the requests refuse reads the tokens bucket for its own
// wait. It did so through redis_rate's AllowN, whose script the store
// could not load (redis_rate keeps its source): go-redis sent it whole
// (EVAL) at each call until Redis had it, a second turn at the client's
// connections. In a burst of 400 Takes on two connections, 20 to 57 calls
// sent it whole, on a store whose other scripts Redis had. The store now
// reads the bucket with a script of its own, loaded with the others.
func TestABurstOfRefusedTakesSendsNoScriptWhole(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, burstClient(t, srv), LimitStoreConfig{Timeout: burstTimeout})
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 5}
	toks := httpguard.BucketLimit{Rate: 1000, Burst: 100_000}
	var wg sync.WaitGroup
	for range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.TakeTurn(context.Background(), "k", reqs, toks, 10)
		}()
	}
	wg.Wait()
	assert.Zero(t, commandCalls(t, srv, "eval"), "no call sent its script whole")
}

// The wait of a Take the requests refuse is the tokens bucket's as
// redis_rate's AllowN for 0 tokens tells it (ResetAfter).
func TestARefusedTakeReadsTheTokensBucketAsRedisRateDoes(t *testing.T) {
	client := startRedis(t, redisOptions{}).client(t)
	s := newLimitStore(t, client, LimitStoreConfig{})
	toks := httpguard.BucketLimit{Rate: 1, Burst: 100} // a token a second
	taken := time.Now()
	wait, _ := take(t, s, "k", noLimit, toks, 40)
	require.Zero(t, wait)
	k := s.keys.of("k")
	peeked := time.Now()
	reset, err := s.peek(context.Background(), s.call, k.rateTokens)
	require.NoError(t, err)
	// 40 tokens taken, a second each, less what refilled since.
	assertWaitRefilled(t, reset, 40*time.Second, time.Since(taken))
	res, err := redis_rate.NewLimiter(client).AllowN(context.Background(), k.tokens, redis_rate.Limit{Rate: 1, Period: interval(toks), Burst: 100}, 0)
	require.NoError(t, err)
	// redis_rate's reading, later, less what refilled between the two.
	assertWaitRefilled(t, res.ResetAfter, reset, time.Since(peeked))
	empty, err := s.peek(context.Background(), s.call, s.keys.of("untouched").rateTokens)
	require.NoError(t, err)
	assert.Zero(t, empty)
}
