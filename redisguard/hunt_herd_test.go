package redisguard

import (
	"errors"
	"github.com/redis/go-redis/v9"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A crowd of requests arriving at once at a Limiter on a shared store
// asked the store all at once: each request that found nobody queued
// asked at once, with two scripts, and most were refused and queued, to
// ask again at their place. 1,000 arrivals at 1,000 requests/s, burst 5,
// sent 3.9 commands a request to Redis, half of them in one herd at the
// start, and went 63-83 ms later than their turns at the 99th percentile.
// Now as many ask at once as the buckets could grant within a round trip
// (the burst, and what refills meanwhile), the others waiting in line for
// an answer: 2.0 commands a request, 10-18 ms late at the 99th
// percentile, at the rate.
func TestLimiterOnRedisAsksOnceForACrowdArrivingAtOnce(t *testing.T) {
	const (
		arrivals = 1000
		rate     = 1000.0
		burst    = 5
	)
	client := startRedis(t, redisOptions{}).client(t)
	cmds := new(atomic.Int64)
	client.AddHook(countingHook{n: cmds})
	var failovers atomic.Int64
	// A Timeout of seconds, as below: with the default 250ms, 1,000
	// goroutines woken at once under -race, beside other packages' tests
	// at a load average of 9 on two cores, kept a call from its answer
	// past it, and the store failed over (one run in two of the suite).
	// The crowd the test is about shows in the commands and the lateness.
	store := newLimitStore(t, client, LimitStoreConfig{Timeout: 5 * time.Second, OnFailover: func(FailoverEvent) { failovers.Add(1) }})
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: rate, Burst: burst, MaxWait: time.Minute, Store: store})
	require.NoError(t, err)
	var mu sync.Mutex
	var sent []time.Time
	rt := l.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		now := time.Now()
		mu.Lock()
		sent = append(sent, now)
		mu.Unlock()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":2,"completion_tokens":10}}`))}, nil
	}))
	send := func() error {
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(100)))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	require.NoError(t, send()) // the presence count and the eviction check, out of the way
	time.Sleep(10 * time.Millisecond)
	cmds.Store(0)
	mu.Lock()
	sent = sent[:0]
	mu.Unlock()

	start := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range arrivals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := send(); err != nil {
				failed.Add(1)
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	require.Zero(t, failed.Load())
	require.Zero(t, failovers.Load(), "the store stayed on Redis")
	require.Len(t, sent, arrivals)
	slices.SortFunc(sent, func(a, b time.Time) int { return a.Compare(b) })

	perRequest := float64(cmds.Load()) / arrivals
	waits := make([]time.Duration, len(sent))
	for i, at := range sent {
		// How much later than its ideal time, the burst then one every
		// 1/rate, the i-th request went.
		ideal := time.Duration(max(i-burst+1, 0)) * time.Duration(float64(time.Second)/rate)
		waits[i] = at.Sub(t0) - ideal
	}
	slices.Sort(waits)
	p99 := waits[len(waits)*99/100]
	// The most sent in any window of 100 ms, against rate·(window + lag) +
	// burst. The transport reads the clock after the Limiter lets a request
	// go; a goroutine held up between the two reads it late, and so crowds
	// a later window by up to rate·lag. With no lag allowed CI once saw 107
	// against 106; -race on two cores sees up to 112 (7 ms late). A Limiter
	// sending twice the rate would send ~200.
	const (
		window = 100 * time.Millisecond
		lag    = 20 * time.Millisecond
	)
	most := 0
	for i, j := 0, 0; i < len(sent); i++ {
		for sent[i].Sub(sent[j]) > window {
			j++
		}
		most = max(most, i-j+1)
	}
	span := sent[len(sent)-1].Sub(sent[0])
	t.Logf("%d arrivals: %.2f commands to Redis a request, p99 lateness %v, first to last %v (%.0f/s after the burst), at most %d in %v (bound %.0f)",
		arrivals, perRequest, p99, span, float64(arrivals-burst)/span.Seconds(), most, window, rate*(window+lag).Seconds()+burst)
	assert.LessOrEqual(t, float64(most), rate*(window+lag).Seconds()+burst, "never above the rate")
	assert.Less(t, perRequest, 2.5, "one ask a request, of two commands")
}

// The crowd of takeburst_test.go, through a Limiter: 3,000 requests at
// once at 10/s, burst 5, MaxWait 500 ms (2 s now), on a client of two connections a
// millisecond away, Timeout 1 s (5 s now: see below). Each asked at once: ~4,500 commands
// queued for two connections, and 1,530-2,719 requests waited past the
// Timeout there and were refused with ErrUnavailable, though Redis
// answered every call. Now a few ask, the others wait in line and are
// refused by the Limiter as the queue grows beyond MaxWait, without
// asking: 33 commands, none unavailable.
func TestLimiterOnRedisDoesNotQueueACrowdForTheClientsConnections(t *testing.T) {
	const arrivals = 3000
	srv := startRedis(t, redisOptions{})
	client := burstClient(t, srv)
	cmds := new(atomic.Int64)
	client.(*redis.Client).AddHook(countingHook{n: cmds})
	events := make(failovers, 10)
	// A Timeout of seconds: under -race beside other packages' tests, 3,000
	// goroutines woken at once have kept the head of the line's one call
	// from its answer for over a second (1,281 unavailable, in one run of
	// .ci/run on a machine at a load average of 12). The queue the test is
	// about shows in the commands counted, whatever the Timeout.
	store := newLimitStore(t, client, LimitStoreConfig{Timeout: 5 * time.Second, OnFailover: events.record})
	// A MaxWait of 2 s: the requests in line wait for the first asks'
	// answers as long as they may wait, then ask beside them; under -race
	// on a loaded machine the first answers have come later than 500 ms
	// (147 commands with four busy loops beside the test).
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 10, Burst: 5, MaxWait: 2 * time.Second, Store: store})
	require.NoError(t, err)
	var admitted, unavailable, limited atomic.Int64
	rt := l.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		admitted.Add(1)
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{}`))}, nil
	}))
	send := func() {
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(100)))
		resp, err := rt.RoundTrip(req)
		switch {
		case errors.Is(err, ErrUnavailable):
			unavailable.Add(1)
		case errors.Is(err, httpguard.ErrRateLimited):
			limited.Add(1)
		case err != nil:
			t.Error(err)
		default:
			resp.Body.Close()
		}
	}
	send() // the presence count, the eviction check and a connection, out of the way
	admitted.Store(0)
	cmds.Store(0)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range arrivals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			send()
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	t.Logf("%d arrivals in %v: %d admitted, %d rate limited, %d unavailable, %d failovers, %d commands to Redis",
		arrivals, took, admitted.Load(), limited.Load(), unavailable.Load(), len(events), cmds.Load())
	assert.Empty(t, events, "Redis answered: no failover")
	assert.Zero(t, unavailable.Load(), "Redis answered every call")
	// The burst and the rate over the run: ~2 s, the MaxWait after the
	// crowd arrived, which on a loaded machine takes a while to.
	assert.LessOrEqual(t, float64(admitted.Load()), 5+10*took.Seconds()+1, "the burst and the rate")
	assert.Less(t, cmds.Load(), int64(100))
}
