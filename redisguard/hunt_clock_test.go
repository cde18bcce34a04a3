package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A store schedules its presence counts, and its rejoin's, on this
// process's wall clock. When that clock steps back (NTP correcting a clock
// that ran ahead, as the package asks of a fleet; a VM resumed), the next
// count was as far ahead as the step: a busy store stopped counting itself
// in for that long (an hour's step, an hour), and the others stopped
// counting it after 15 seconds, each then taking a larger share of the
// limits should Redis go away, which summed to more than the limits.
func TestLimitStoreWhoseClockSteppedBackKeepsCountingItselfIn(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	// A count lasts 3·every: long enough that a loaded machine's delay
	// between a's last count and b's reading does not make it lapse.
	const every = 100 * time.Millisecond
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "stepped"})
	b := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "stepped"})
	a.every, b.every = every, every
	ctx := context.Background()
	require.NoError(t, a.countIn(ctx))
	counted := time.Now()
	require.NoError(t, b.countIn(ctx))
	require.EqualValues(t, 2, b.replicas.Load())

	// a's last count was taken while its clock read an hour ahead; the
	// clock has been stepped back since.
	a.nextBeat.Store(time.Now().Add(time.Hour).UnixNano())
	// a is busy, calling Redis every few milliseconds, until the count it
	// took before the step has lapsed.
	for time.Since(counted) < 4*every {
		take(t, a, "k", noLimit, noLimit, 0)
		time.Sleep(every / 20)
	}
	require.NoError(t, b.countIn(ctx))
	assert.EqualValues(t, 2, b.replicas.Load(), "a still counts in: b counts it")
}

// Likewise a store that rejoins the fleet counts the stores back every
// ProbeInterval, and stops waiting for them after three presence
// intervals: a clock stepped back made it wait as much longer, taking
// every request from its local share as well as from Redis.
func TestLimitStoreRejoiningWhoseClockSteppedBackEndsTheRejoin(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "stepped-rejoin", ProbeInterval: 10 * time.Millisecond})
	s.every = 20 * time.Millisecond
	ctx := context.Background()
	require.NoError(t, s.countIn(ctx))
	// Back on Redis, waiting for a store that will not come back; the
	// clock is then stepped back an hour.
	s.startRejoin(2, 1, time.Now())
	require.True(t, s.rejoin.on.Load())
	s.now = func() time.Time { return time.Now().Add(-time.Hour) }

	for deadline := time.Now().Add(time.Second); s.rejoin.on.Load() && time.Now().Before(deadline); {
		take(t, s, "k", noLimit, noLimit, 0)
		time.Sleep(5 * time.Millisecond)
	}
	assert.False(t, s.rejoin.on.Load(), "the rejoin ends three presence intervals after the step at most")
}

// A store that rejoins the fleet waits three presence intervals at most
// for the others, timed on this process's wall clock: a forward step of
// that clock (NTP correcting a clock that ran behind, a VM resumed) ended
// the rejoin at the next Take, and the store took the fleet's whole rate
// from Redis while the others still sent on their shares.
func TestLimitStoreRejoiningWhoseClockSteppedForwardKeepsToItsShare(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "stepped-forward", ProbeInterval: 10 * time.Millisecond})
	s.every = time.Second
	ctx := context.Background()
	require.NoError(t, s.countIn(ctx))
	// Back on Redis, waiting for a store counted before the outage.
	s.startRejoin(2, 1, time.Now())
	require.True(t, s.rejoin.on.Load())

	s.now = func() time.Time { return time.Now().Add(time.Hour) }
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		take(t, s, "k", noLimit, noLimit, 0)
		time.Sleep(5 * time.Millisecond)
	}
	assert.True(t, s.rejoin.on.Load(), "50 ms into a rejoin of 3 s at most, the store still waits for the other")
	assert.Equal(t, 0.5, s.share())
}
