package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller that cancels its context (no deadline) while Redis accepts the
// connection and never answers, on a client with ContextTimeoutEnabled:
// go-redis follows a context's deadline, not its cancellation, so the call
// went on until the store's Timeout (1s here) before the caller heard of
// its own cancel. It now returns at once, with context.Canceled, and the
// store stays on Redis.
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
