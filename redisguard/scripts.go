package redisguard

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// script is a Lua script of a store's: its source, and its SHA-1, which
// EVALSHA names it by.
type script struct{ src, hash string }

func newScript(src string) *script {
	h := sha1.Sum([]byte(src))
	return &script{src: src, hash: hex.EncodeToString(h[:])}
}

// Hash returns the script's SHA-1, in hex, as EVALSHA takes it.
func (sc *script) Hash() string { return sc.hash }

// scriptSet is the scripts a store runs, and whether Redis has them. A
// Redis that does not (a fresh one, or after SCRIPT FLUSH, a restart or a
// failover to a replica) answers EVALSHA with NOSCRIPT. go-redis's
// Script.Run then sends the script whole (EVAL), a second turn at the
// client's connections behind every call queued there meanwhile: in a
// burst larger than the pool, every EVAL timed out in the queue, Redis
// never got the scripts, and the store failed over on a Redis that
// answered every command. So the store loads its scripts itself (SCRIPT
// LOAD, pipelined), before its first script, on its way back from an
// outage, and after a NOSCRIPT answer; meanwhile its calls wait for that
// one load rather than queue commands that would be answered NOSCRIPT.
// The calls already queued when Redis lost the scripts are answered
// NOSCRIPT and wait for the load too: in a burst larger than the pool,
// they fail alone, as calls that waited for the client (see caller.alone).
//
// A Cluster's or a Ring's nodes each keep their own scripts, and one node
// down would fail a load on every other: there, as on a Redis that refuses
// SCRIPT LOAD (renamed, or not permitted), a call that Redis answers
// NOSCRIPT sends its script whole, as go-redis does.
type scriptSet struct {
	all []*script
	// state is twice the loads that succeeded, plus one while the scripts
	// are missing: before the first load, and from a NOSCRIPT answer until
	// the next load. Meanwhile the calls wait for one load instead of
	// queueing EVALSHAs that would be answered NOSCRIPT, and a NOSCRIPT
	// answer to an EVALSHA sent before the last load asks for no other.
	state   atomic.Uint64
	refused atomic.Bool // no loading: a call answered NOSCRIPT sends EVAL

	mu      sync.Mutex
	loading chan struct{} // closed when the load under way ends; nil when none is
}

func newScriptSet(client redis.UniversalClient, all ...*script) *scriptSet {
	s := &scriptSet{all: all}
	if _, ok := client.(*redis.Client); ok {
		s.state.Store(1) // missing until loaded
	} else {
		s.refused.Store(true)
	}
	return s
}

// missing marks the scripts missing, unless a load succeeded since state
// was st.
func (s *scriptSet) missing(st uint64) {
	if st&1 == 0 {
		s.state.CompareAndSwap(st, st|1)
	}
}

// ensure waits until the scripts are not missing: for the load under way,
// or loading them itself, on ctx. An error is the load's, or ctx's while
// it waited.
func (s *scriptSet) ensure(ctx context.Context, client redis.UniversalClient) error {
	for {
		s.mu.Lock()
		st := s.state.Load()
		if st&1 == 0 {
			s.mu.Unlock()
			return nil
		}
		wait := s.loading
		if wait == nil {
			wait = make(chan struct{})
			s.loading = wait
			s.mu.Unlock()
			err := s.load(ctx, client)
			if err != nil && refused(err) {
				s.refused.Store(true) // a call answered NOSCRIPT sends EVAL
				err = nil
			}
			s.mu.Lock()
			s.loading = nil
			if err == nil {
				s.state.Store(s.state.Load() + 1) // odd: the next even, one load more
			}
			s.mu.Unlock()
			close(wait)
			return err
		}
		s.mu.Unlock()
		select {
		case <-wait: // loaded, or failed: load them again (ctx may still allow it)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// load sends SCRIPT LOAD for every script, in one pipeline: one turn at
// the client's connections, and one round trip.
func (s *scriptSet) load(ctx context.Context, client redis.UniversalClient) error {
	_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sc := range s.all {
			p.ScriptLoad(ctx, sc.src)
		}
		return nil
	})
	return err
}

// reload loads the scripts again, unless a load succeeds meanwhile: a
// Redis that was away may be back without them (restarted empty, or a
// replica that took over).
func (s *scriptSet) reload(ctx context.Context, client redis.UniversalClient) error {
	if s.refused.Load() {
		return nil
	}
	s.missing(s.state.Load())
	return s.ensure(ctx, client)
}

// isNoScript reports whether err is Redis's answer to EVALSHA of a script
// it does not have. An error path's.
func isNoScript(err error) bool {
	return redis.HasErrorPrefix(err, "NOSCRIPT")
}
