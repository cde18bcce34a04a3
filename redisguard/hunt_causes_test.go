package redisguard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errCallerGaveUp is a caller's own cause, as errgroup's first error is.
var errCallerGaveUp = errors.New("a sibling failed")

// A store call that the caller's context ends (a cancellation with a
// cause, a deadline with WithTimeoutCause) fails with the caller's cause
// beside ctx.Err(), as the root package's layers do (see its contextEnd):
// it failed with go-redis's error alone (context.Canceled, or an i/o
// timeout for a deadline), and the cause was lost, whether or not the
// client follows its contexts. The store stays on Redis.
func TestStoreCallsEndedByTheCallerKeepTheCause(t *testing.T) {
	addr := hangingRedis(t)
	toks := httpguard.BucketLimit{Rate: 1, Burst: 100}
	type call struct {
		name string
		do   func(ctx context.Context, b *BudgetStore, l *LimitStore) error
	}
	calls := []call{
		{"Reserve", func(ctx context.Context, b *BudgetStore, _ *LimitStore) error {
			_, err := b.Reserve(ctx, lifetime(1, 1), 100)
			return err
		}},
		{"Totals", func(ctx context.Context, b *BudgetStore, _ *LimitStore) error {
			_, _, err := b.Totals(ctx, "lifetime")
			return err
		}},
		{"Renew", func(ctx context.Context, b *BudgetStore, _ *LimitStore) error {
			return b.Renew(ctx, "lifetime", []uint64{1}, time.Minute)
		}},
		{"Take", func(ctx context.Context, _ *BudgetStore, l *LimitStore) error {
			_, _, err := l.Take(ctx, "k", noLimit, toks, 1)
			return err
		}},
		{"Pause", func(ctx context.Context, _ *BudgetStore, l *LimitStore) error {
			return l.Pause(ctx, "k", time.Second)
		}},
		{"Adjust", func(ctx context.Context, _ *BudgetStore, l *LimitStore) error {
			return l.Adjust(ctx, "k", toks, 1)
		}},
		{"SlowDown", func(ctx context.Context, _ *BudgetStore, l *LimitStore) error {
			_, _, err := l.SlowDown(ctx, "k", 0, 1, 0)
			return err
		}},
	}
	ends := []struct {
		name   string
		newCtx func() (context.Context, context.CancelFunc)
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancelCause(context.Background())
			time.AfterFunc(20*time.Millisecond, func() { cancel(errCallerGaveUp) })
			return ctx, func() { cancel(nil) }
		}},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeoutCause(context.Background(), 20*time.Millisecond, errCallerGaveUp)
		}},
	}
	for _, follows := range []bool{false, true} {
		// A client that follows its contexts ends a call at the context's
		// deadline, not when it is cancelled: the store then stops waiting
		// for it at the cancel (caller.do).
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: follows, MaxRetries: -1})
		t.Cleanup(func() { client.Close() })
		for _, c := range calls {
			for _, end := range ends {
				// The caller ends each call 20ms in, long before the
				// Timeout: with a Timeout of 200ms, a machine loaded
				// enough to run the caller's 20ms timer after the store's
				// 200ms one had the store see Redis not answer, and fail
				// over (one run in two of the suite, -race, at a load
				// average of 9 on two cores). With a Timeout of a second
				// the test takes 5.6s instead of 2.5s.
				b := newStore(t, client, BudgetStoreConfig{Timeout: time.Second, ProbeInterval: time.Hour})
				l := newLimitStore(t, client, LimitStoreConfig{Timeout: time.Second, ProbeInterval: time.Hour})
				what := fmt.Sprintf("%s %s, ContextTimeoutEnabled %v", c.name, end.name, follows)
				ctx, cancel := end.newCtx()
				err := c.do(ctx, b, l)
				cancel()
				require.Error(t, err, what)
				assert.ErrorIs(t, err, errCallerGaveUp, what)
				assert.ErrorIs(t, err, ctx.Err(), what)
				if c.name != "Reserve" { // whose release, on a Redis that never answers, fails the store over
					assert.False(t, b.link.isDown(), "%s: the caller, not Redis, ended the call", what)
				}
				assert.False(t, l.link.isDown(), "%s: the caller, not Redis, ended the call", what)
				l.nextBeat.Store(0) // never counted in: Close has nothing to count out of a Redis that hangs
			}
		}
	}
}
