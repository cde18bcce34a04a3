package httpguard

// Tests of the fleet-mode adversarial review of 2026-11-30 (branch
// review-fleet), on the in-memory stores.

import (
	"container/heap"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// simulateFleet is simulate (ratelimit_adapt_test.go) with the callers
// spread over replicas: one Limiter per process, all sharing one
// LimitStore, as redisguard's LimitStore makes a fleet share Redis.
func simulateFleet(t *testing.T, sc scenario, replicas int) convergence {
	t.Helper()
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	store := newMemoryLimitStore(clock)
	req, err := http.NewRequest(http.MethodPost, "http://provider.example/v1/chat/completions", nil)
	require.NoError(t, err)
	ls := make([]*Limiter, replicas)
	kss := make([]*keyState, replicas)
	for i := range ls {
		ls[i], err = NewLimiter(LimitConfig{RequestsPerSecond: sc.limit, Burst: sc.limitBurst, Store: store})
		require.NoError(t, err)
		ls[i].now = clock
		kss[i] = ls[i].key(req, "m", false, now)
	}
	provider := &simProvider{rate: sc.provider, burst: float64(sc.provBurst), tokens: float64(sc.provBurst), last: now, headers: sc.headers}

	cs := make([]simCaller, sc.callers)
	q := &simQueue{}
	seq := 0
	push := func(at time.Time, caller int) {
		seq++
		heap.Push(q, simEvent{at: at, seq: seq, caller: caller})
	}
	for i := range cs {
		push(now, i)
	}
	var res convergence
	end := start.Add(sc.d)
	for q.Len() > 0 {
		e := heap.Pop(q).(simEvent)
		if e.at.After(end) {
			break
		}
		now = e.at
		c := &cs[e.caller]
		l, ks := ls[e.caller%replicas], kss[e.caller%replicas]
		if c.resp == nil { // its turn?
			wait, _, err := l.turn(context.Background(), ks, &c.p, 0, now, anyWait)
			require.NoError(t, err)
			if wait > 0 {
				push(now.Add(wait), e.caller)
				continue
			}
			c.sentAt, c.resp = now, provider.answer(now.Add(sc.rtt/2))
			push(now.Add(sc.rtt), e.caller)
			continue
		}
		resp := c.resp
		c.resp, c.p = nil, place{}
		l.observe(bareRequest, nil, ks, 0, resp, c.sentAt)
		if resp.StatusCode == http.StatusOK {
			res.served++
			c.retries = 0
			push(now, e.caller)
			continue
		}
		res.tooMany++
		delay, ok := serverWait(resp.Header, now)
		if !ok {
			delay = time.Second << c.retries
		}
		if c.retries++; c.retries > 5 {
			c.retries, delay = 0, 0
		}
		push(now.Add(delay), e.caller)
	}
	res.seconds = sc.d.Seconds()
	return res
}

// A fleet sharing one LimitStore finds the provider's rate as one process
// does (TestLimiterConvergesOnTheProvidersRate: at least 90% of it served,
// at most 5% of requests answered 429). Each Limiter cuts its key's rate
// after a 429 from the rate it was sending at itself (its share of the
// fleet's, about 1/N of it) and passes that rate to the store as the rate
// of the bucket the whole fleet shares: once each replica has had a 429,
// the fleet sends at β/N of what the provider accepted. With the issue's
// scenario (50 callers, 200/s configured, a provider enforcing 50/s),
// spread over 4 replicas: 22.0/s served with bare 429s (one process: 47.7),
// 25.8/s with Retry-After and a precise reset (one process: 50.3). A store
// that keeps the rate for the fleet (AdaptiveLimitStore) fixes it.
func TestAFleetSharingALimitStoreConvergesOnTheProvidersRate(t *testing.T) {
	for _, h := range []httpguardtest.RateLimitHeaders{httpguardtest.NoRateLimitHeaders, httpguardtest.CoarseRetryAfter} {
		for _, rtt := range []time.Duration{time.Millisecond, 20 * time.Millisecond} {
			for _, replicas := range []int{1, 4, 8} {
				sc := issueScenario(h)
				sc.rtt = rtt
				fleet := simulateFleet(t, sc, replicas)
				t.Logf("headers %d, rtt %v, %d replicas sharing a store: served %.1f/s, %.1f%% answered 429",
					h, rtt, replicas, fleet.servedPerSecond(), fleet.tooManyShare())
				assert.GreaterOrEqual(t, fleet.servedPerSecond(), 45.0, "headers %d, rtt %v, %d replicas: at least 90%% of the provider's 50/s", h, rtt, replicas)
				assert.LessOrEqual(t, fleet.tooManyShare(), 5.0, "headers %d, rtt %v, %d replicas: at most 5%% of requests answered 429", h, rtt, replicas)
			}
		}
	}
}
