package redisguard

// Tests of the fleet-mode adversarial review of 2026-11-30 (branch
// review-fleet). Each failed on main before its fix.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller's deadline is not an outage. A client with
// ContextTimeoutEnabled sets its connection's deadline to the context's,
// so a call that the caller's deadline cuts short (an AttemptTimeout, an
// SDK's timeout) may fail with an i/o timeout a moment before the context
// says it has ended; the store took that for Redis failing and failed over:
// a Budget then refused every request of the process with ErrUnavailable
// until the next probe (a second by default), on a Redis that was there.
func TestACallersDeadlineDoesNotFailTheStoreOver(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, srv.client(t), BudgetStoreConfig{OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 0), 100).OK) // loads the script

	stalled := blockRedis(t, srv.Addr, time.Second)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := s.Reserve(ctx, lifetime(uint64(10+i), 0), 100)
		cancel()
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrUnavailable, "try %d: the caller's deadline ended the call, not Redis", i)
	}
	require.NoError(t, <-stalled)
	select {
	case e := <-events:
		t.Fatalf("the store failed over on callers' deadlines: %+v", e)
	default:
	}
	_, err := s.Reserve(context.Background(), lifetime(2, 0), 100)
	assert.NoError(t, err)
}
