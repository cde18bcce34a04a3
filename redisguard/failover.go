package redisguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
)

// DefaultProbeInterval is how often a store that lost Redis checks whether
// it is back, when its config leaves ProbeInterval zero.
const DefaultProbeInterval = time.Second

// FailoverEvent tells that a store lost Redis or has it back. It is a plain
// value, safe to keep.
type FailoverEvent struct {
	// Store names the store, such as `budget "openai-daily"` or
	// `limiter "openai-prod"`.
	Store string
	// Down is true when the store lost Redis, false when Redis is back.
	Down bool
	// Err, when Down, is the error of the call that failed.
	Err error
	// FailOpen tells what the store does while Redis is away: admit from
	// its local share (true), money or requests, or refuse (false).
	FailOpen bool
	// Outage, when Redis is back, is how long it was away.
	Outage time.Duration
	// Replayed, when Redis is back, is the money the store added to Redis
	// before using it again: the charges it could not record meanwhile,
	// including everything its local share spent. A LimitStore has no
	// money to add: zero.
	Replayed httpguard.Money
}

// link is a store's connection state: up, or down from a failed call until
// a probe succeeds. While down, one goroutine probes every interval; the
// store decides with recover whether it is whole again.
type link struct {
	what     string // `budget "name"`, for messages
	failOpen bool
	interval time.Duration
	onEvent  func(FailoverEvent)
	logger   *slog.Logger
	now      func() time.Time
	// recover is called on each probe. It returns the money it replayed
	// and, when the store may use Redis again (it then called up itself,
	// under whatever lock makes that safe), ok and what up returned.
	recover func(ctx context.Context) (replayed httpguard.Money, outage time.Duration, ok bool)
	// check asks Redis a question of the store's about key, a key of the
	// store's callers ("" for none), on the node that serves it (see
	// suspect); an error means that Redis did not answer within the
	// store's Timeout.
	check func(ctx context.Context, key string) error
	// checking is set while a check runs.
	checking atomic.Bool

	mu      sync.Mutex
	down    bool
	since   time.Time
	failed  time.Time // the last failure: the call's that failed it over, or a probe's
	lastErr error
	closed  bool
	stop    chan struct{}
	probing sync.WaitGroup
}

func (l *link) init() { l.stop = make(chan struct{}) }

// isDown reports whether the store is failed over.
func (l *link) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down
}

// lastFailure returns when a call or a probe of the store last failed.
func (l *link) lastFailure() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// fail records that a call failed with err, and fails the store over if it
// was up.
func (l *link) fail(err error) {
	l.mu.Lock()
	l.lastErr, l.failed = err, l.now()
	if l.down || l.closed {
		l.mu.Unlock()
		return
	}
	l.down, l.since = true, l.failed
	l.probing.Add(1)
	l.mu.Unlock()
	go l.probe()
	mode := "refusing what it cannot account for (fail closed)"
	if l.failOpen {
		mode = "admitting from its local share (fail open)"
	}
	if l.logger != nil {
		l.logger.Warn("redisguard: Redis unavailable: "+mode, "store", l.what, "err", err)
	}
	if l.onEvent != nil {
		l.onEvent(FailoverEvent{Store: l.what, Down: true, Err: err, FailOpen: l.failOpen})
	}
}

// up marks the store as having Redis again, and returns how long it was
// away.
func (l *link) up() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
	return l.now().Sub(l.since)
}

func (l *link) recovered(outage time.Duration, replayed httpguard.Money) {
	if l.logger != nil {
		if replayed > 0 {
			l.logger.Info("redisguard: Redis is back", "store", l.what, "outage", outage, "replayed", replayed)
		} else {
			l.logger.Info("redisguard: Redis is back", "store", l.what, "outage", outage)
		}
	}
	if l.onEvent != nil {
		l.onEvent(FailoverEvent{Store: l.what, FailOpen: l.failOpen, Outage: outage, Replayed: replayed})
	}
}

func (l *link) probe() {
	defer l.probing.Done()
	t := time.NewTicker(l.interval)
	defer t.Stop()
	var replayed httpguard.Money
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		more, outage, ok := l.recover(context.Background())
		replayed += more
		if ok {
			l.recovered(outage, replayed)
			return
		}
	}
}

// unavailable is the error of a call made while the store is down; doing
// says what the store does instead.
func (l *link) unavailable(doing string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Errorf("redisguard: %s: Redis has not answered since %s (%v); %s: %w",
		l.what, l.since.Format("2006-01-02T15:04:05.000Z07:00"), l.lastErr, doing, ErrUnavailable)
}

// onRedis runs f on Redis, unless the store has lost it. It reports done
// when f's outcome stands: f succeeded, or was cut short because ctx ended
// (not Redis's fault; err says so, and the store checks Redis about key:
// see suspect), or waited past the Timeout for the client while Redis
// answered others (a queuedError: f fails alone). When Redis failed, the
// store fails over and the caller turns to the local share or refuses.
func (l *link) onRedis(ctx context.Context, key string, f func() error) (done bool, err error) {
	if l.isDown() {
		return false, nil
	}
	switch err := f(); {
	case err == nil:
		return true, nil
	case ended(ctx) && cutShort(err):
		l.suspect(key)
		return true, l.wrap(callerEnd(ctx))
	case errors.As(err, new(queuedError)):
		return true, l.wrap(err)
	default:
		l.fail(err)
		return false, nil
	}
}

// suspect is told that a caller's context ended a call before Redis
// answered. That alone is not Redis's fault: the caller gave up, or its
// deadline was shorter than a Redis that answers could take. But when every
// caller's deadline is shorter than the store's Timeout, a Redis that
// stalled (it accepts connections and never answers: SIGSTOP, a full
// network buffer, a host gone without a reset) would never be told apart,
// and every request would wait its whole deadline and fail, instead of
// failing over. So the store asks Redis itself, in the background, on a
// call bounded by its Timeout alone, and fails over when that gets no
// answer: the same evidence as a caller's call that ran into the Timeout.
// The check asks about the caller's key, on the node that serves it (a
// Cluster's other nodes may answer while that one stalls). One check runs
// at a time, so that Redis is asked one more question at most while
// callers give up early. An answer of any kind, an error reply
// included, is Redis alive: the callers' own calls tell when it refuses;
// so is a check that waited for the client while Redis answered others (a
// queuedError).
func (l *link) suspect(key string) {
	if l.check == nil || !l.checking.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	if l.down || l.closed {
		l.mu.Unlock()
		l.checking.Store(false)
		return
	}
	l.probing.Add(1) // close waits for the check, at most a Timeout
	l.mu.Unlock()
	go func() {
		defer l.probing.Done()
		defer l.checking.Store(false)
		var re redis.Error
		if err := l.check(context.Background(), key); err != nil && !errors.As(err, &re) && !errors.As(err, new(queuedError)) {
			l.fail(fmt.Errorf("asked after a caller gave up on a call Redis had not answered: %w", err))
		}
	}()
}

// ended reports whether ctx has ended or its deadline has passed. A call
// that the deadline cut short may fail (an i/o timeout from the
// connection's deadline, which a client with ContextTimeoutEnabled sets to
// ctx's) a moment before ctx says it has ended: the caller's deadline,
// not Redis, ended that call.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// callerEnd is the error of a call that ctx ended (see ended): why ctx
// ended, as httpguard's layers report it, rather than go-redis's error
// (ctx.Err() alone, or an i/o timeout at the deadline): ctx.Err() and the
// cause a caller ended it with (WithCancelCause, WithTimeoutCause;
// errgroup's first error), so that errors.Is finds both. A deadline that
// passed before ctx's own timer fired is waited out: the timer fires at
// once (a second at most, for a context that breaks its contract). An
// error path's.
func callerEnd(ctx context.Context) error {
	if ctx.Err() == nil {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() == nil {
			return context.DeadlineExceeded
		}
	}
	err, cause := ctx.Err(), context.Cause(ctx)
	if errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// cutShort reports whether err is what a call cut short by its context
// fails with: the context's error, or a timeout (of the connection's
// deadline, set to the context's). Any other failure, such as a connection
// that Redis closed (io.EOF) or refused, is Redis's, even when the
// caller's context happens to have ended meanwhile.
func cutShort(err error) bool {
	var ne net.Error
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// wrap names the store in an error from Redis.
func (l *link) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("redisguard: %s: %w", l.what, err)
}

// close stops the probes.
func (l *link) close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.mu.Unlock()
	l.probing.Wait()
}
