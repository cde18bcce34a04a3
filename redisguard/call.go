package redisguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is returned, wrapped, by a store that cannot reach Redis
// (down, too slow, restarting, refusing writes) and fails closed. The error
// says since when and why; test for it with errors.Is.
//
// A BudgetStore also returns it while Redis answers, for a reservation it
// cannot make there: in a window whose money Redis lost, when it fails
// closed (see the package documentation), and in either mode for one that
// followed the newest window to a newer one 100 times, windows being
// shorter than a round trip to Redis, or whose window starts further ahead
// of the Redis server's clock than its own length (its process's clock
// runs ahead). Only the lost window, or that one reservation, fails: the
// store stays on Redis. A LimitStore returns it, and stays on Redis, for a
// Take that ran out of Timeout waiting for its client's connections while
// Redis answered others (see the package documentation); so does a
// BudgetStore for such a reservation, renewal or Totals.
var ErrUnavailable = errors.New("redis unavailable")

// DefaultTimeout bounds each Redis call of a store whose config leaves
// Timeout zero.
const DefaultTimeout = 250 * time.Millisecond

// caller makes Redis calls that end within timeout, or as soon as the
// caller's context ends. A go-redis client follows a context's deadline
// only with ContextTimeoutEnabled, and never its cancellation: it waits for
// the reply until the connection's deadline (the context's, or its
// ReadTimeout, 3 s by default, and retries). So a call runs on a goroutine
// that the caller stops waiting for when its context is cancelled, or at
// the deadline when the client does not follow it.
type caller struct {
	client   redis.UniversalClient
	timeout  time.Duration
	deadline bool // the client itself ends calls at the context's deadline
	// scripts are the store's scripts, and whether Redis has them.
	scripts *scriptSet
	// heard, when set, is when Redis last answered one of the calls that
	// share it within its Timeout (since epoch): a call that runs out of
	// Timeout after Redis answered another one so then fails with a
	// queuedError (see alone).
	heard *atomic.Int64
}

// alone returns c with heard: its calls record when Redis answers them
// within the Timeout, and one that runs out of Timeout while Redis so
// answered another call sharing heard fails with a queuedError, which is
// not Redis's failure: Redis answers, and the call waited for its turn at
// the client (all its connections in use by a burst of callers). A call
// whose outcome must reach Redis (a settlement, a debit, a pause) is made
// without, or sent again while it fails so (a BudgetStore's charges: see
// BudgetStore.send).
func (c caller) alone(heard *atomic.Int64) caller {
	c.heard = heard
	return c
}

// epoch is what heard counts from: a monotonic clock, which no step of
// the wall clock moves.
var epoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(epoch)) }

// answered records in heard (when set) that a call begun at start ended
// with err: an answer of Redis's, unless err is not a reply. An answer
// that came after the call's Timeout is not recorded: a Redis that
// answers every call that late does not answer.
func (c caller) answered(err error, start int64) {
	if c.heard == nil || err != nil && !isReply(err) {
		return
	}
	if now := sinceEpoch(); now-start <= int64(c.timeout) {
		c.heard.Store(now)
	}
}

// isReply reports whether err is an error reply of Redis's. An error
// path's: the error it looks for is allocated.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// queuedError is the error of a call that got no answer within the
// Timeout while Redis answered, within theirs, other calls sharing its
// heard (see caller.alone): the call fails, and the store stays on Redis.
// It wraps ErrUnavailable.
type queuedError struct{ error }

func (e queuedError) Unwrap() error { return e.error }

func newCaller(client redis.UniversalClient, timeout time.Duration, scripts ...*script) caller {
	c := caller{client: client, timeout: timeout, scripts: newScriptSet(client, scripts...)}
	switch cl := client.(type) {
	case *redis.Client:
		c.deadline = cl.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		c.deadline = cl.Options().ContextTimeoutEnabled
	case *redis.Ring:
		c.deadline = cl.Options().ContextTimeoutEnabled
	}
	return c
}

// script runs sc, one of c.scripts, with keys and args, and returns its
// reply.
func (c caller) script(ctx context.Context, sc *script, keys []string, args ...any) (any, error) {
	return c.scriptTracked(ctx, nil, sc, keys, args...)
}

// scriptTracked is script, and closes ended (unless nil) once the call has
// ended: when script returns, or later, when its caller stopped waiting
// for it (see do).
func (c caller) scriptTracked(ctx context.Context, ended chan struct{}, sc *script, keys []string, args ...any) (any, error) {
	v, err := c.doTracked(ctx, ended, func(ctx context.Context) (any, error) {
		return c.run(ctx, sc, keys, args...)
	})
	if err != nil && strings.Contains(err.Error(), "after non deterministic commands") {
		err = fmt.Errorf("redisguard needs Redis %s or later (its scripts write after reading the server's clock, "+
			"which an older Redis refuses, as does one set to lua-replicate-commands no): %w", minRedisVersion, err)
	}
	return v, err
}

// run runs sc by its SHA-1 (EVALSHA), once Redis has c.scripts (see
// scriptSet). A NOSCRIPT answer is Redis's: it counts as heard, and the
// call runs sc again once the scripts are loaded again, or sends it whole
// (EVAL) where they are not loaded or went missing again meanwhile. Each
// way, sc runs once, atomically.
func (c caller) run(ctx context.Context, sc *script, keys []string, args ...any) (any, error) {
	st := c.scripts.state.Load()
	if st&1 != 0 {
		if err := c.scripts.ensure(ctx, c.client); err != nil {
			return nil, err
		}
		st = c.scripts.state.Load()
	}
	v, err := c.client.EvalSha(ctx, sc.hash, keys, args...).Result()
	if err == nil || !isNoScript(err) {
		return v, err
	}
	if c.heard != nil && ctx.Err() == nil {
		c.heard.Store(sinceEpoch()) // Redis answered within the Timeout (see answered)
	}
	if !c.scripts.refused.Load() {
		c.scripts.missing(st)
		if err := c.scripts.ensure(ctx, c.client); err != nil {
			return nil, err
		}
		if v, err = c.client.EvalSha(ctx, sc.hash, keys, args...).Result(); err == nil || !isNoScript(err) {
			return v, err
		}
	}
	return c.client.Eval(ctx, sc.src, keys, args...).Result()
}

// reload loads c.scripts again, within the Timeout (see scriptSet.reload):
// a store back from an outage does so before its callers come back.
func (c caller) reload(ctx context.Context) error {
	_, err := c.do(ctx, func(ctx context.Context) (any, error) {
		return nil, c.scripts.reload(ctx, c.client)
	})
	return err
}

// minRedisVersion is the oldest Redis the stores' scripts run on: before
// 5.0, a script that read the clock (TIME) may not write, unless it asks
// for effects replication, the default since (lua-replicate-commands, a
// setting until 7.0).
const minRedisVersion = "5.0"

type reply struct {
	v   any
	err error
}

// do runs f with a context that ends after c.timeout, and returns when f
// does or when that context ends. When the client follows deadlines, a
// context that ended at its deadline is left to f, which returns at once
// with what Redis said by then: a reply that came just in time is not
// lost. A cancellation, which no client follows, returns at once, with the
// context's error.
func (c caller) do(parent context.Context, f func(context.Context) (any, error)) (any, error) {
	return c.doTracked(parent, nil, f)
}

// doTracked is do, and closes called (unless nil) once f has returned.
func (c caller) doTracked(parent context.Context, called chan struct{}, f func(context.Context) (any, error)) (any, error) {
	var start int64
	if c.heard != nil {
		start = sinceEpoch()
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var r reply
	if c.deadline && parent.Done() == nil {
		r.v, r.err = f(ctx) // only the deadline ends ctx, and the client follows it
		c.answered(r.err, start)
		if called != nil {
			close(called)
		}
	} else {
		done := make(chan reply, 1)
		go func() {
			v, err := f(ctx)
			c.answered(err, start)
			if called != nil {
				close(called)
			}
			done <- reply{v, err}
		}()
		select {
		case r = <-done:
		case <-ctx.Done():
			if deadline, _ := ctx.Deadline(); c.deadline && !time.Now().Before(deadline) {
				r = <-done // the client ends the call at that deadline itself
			} else {
				r.err = ctx.Err()
			}
		}
	}
	// ended: a client that follows deadlines may fail the call (an i/o
	// timeout) a moment before ctx says it has ended.
	if r.err != nil && !ended(parent) && ended(ctx) {
		if c.heard != nil && c.heard.Load() > start {
			return nil, queuedError{fmt.Errorf("no answer within %v (Timeout), while Redis answered other calls: "+
				"the client's connections were all in use (raise its PoolSize, or the Timeout) (%w): %w", c.timeout, r.err, ErrUnavailable)}
		}
		return nil, fmt.Errorf("no answer within %v (Timeout): %w", c.timeout, r.err)
	}
	return r.v, r.err
}

// evictionCheck warns a store's Logger, once, when Redis may evict the
// store's keys: a maxmemory with a maxmemory-policy other than noeviction.
// A Redis that refuses INFO (a managed one may) is not checked; one that
// could not be reached is checked at a later call, and its error is
// returned: the call fails as its own would have, rather than wait a
// second Timeout on a Redis that did not answer the first.
type evictionCheck struct{ checked atomic.Bool }

func (e *evictionCheck) check(ctx context.Context, call caller, logger *slog.Logger, what, harm string) error {
	if logger == nil || e.checked.Load() || !e.checked.CompareAndSwap(false, true) {
		return nil
	}
	v, err := call.do(ctx, func(ctx context.Context) (any, error) {
		return call.client.Info(ctx, "memory").Result()
	})
	info, _ := v.(string)
	if err != nil {
		if refused(err) {
			return nil
		}
		e.checked.Store(false)
		return err
	}
	var maxmemory, policy string
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "maxmemory":
			maxmemory = v
		case "maxmemory_policy":
			policy = v
		}
	}
	if maxmemory != "" && maxmemory != "0" && policy != "" && policy != "noeviction" {
		logger.Warn("redisguard: "+harm+": set maxmemory-policy noeviction",
			"store", what, "maxmemory", maxmemory, "maxmemory-policy", policy)
	}
	return nil
}
