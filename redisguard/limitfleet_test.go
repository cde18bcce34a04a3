package redisguard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Processes sharing one Limiter through a LimitStore: the test binary again,
// as children (see child_test.go), against one fault server that counts
// what reaches it.

// limitResult is what a "limit" child reports on its last line of output.
type limitResult struct {
	// OK counts answers, TooMany the 429s, Failed the other errors.
	OK, TooMany, Failed int
	FailedSample        string
	// PausedWaits counts the waits for a pause; ServerPauses the pauses
	// this process's own 429s set.
	PausedWaits  int
	ServerPauses uint64
	// Downs and Ups count the store's failovers to the local share and
	// back; FailOpen is the mode the last Down reported.
	Downs, Ups int
	FailOpen   bool
	// UpAt is when each Up came, in Unix ns.
	UpAt []int64
}

// tokensPerMinute is the children's token limit: high enough never to
// hold them back, so that the tokens bucket is taken from and corrected
// on every request without changing the rate.
const tokensPerMinute = 10_000_000

// childLimit sends requests through a Limiter on a LimitStore, Concurrency
// at a time, until a line on its stdin. It says "answered" after its first
// answer and prints a limitResult at the end.
func childLimit(c childConfig, client redis.UniversalClient) error {
	var (
		mu  sync.Mutex
		res limitResult
	)
	probe := 20 * time.Millisecond
	if c.ProbeInterval > 0 {
		probe = c.ProbeInterval
	}
	store, err := NewLimitStore(client, LimitStoreConfig{Name: c.Name, Timeout: testTimeout, ProbeInterval: probe,
		OnFailover: func(e FailoverEvent) {
			mu.Lock()
			defer mu.Unlock()
			if e.Down {
				res.Downs++
				res.FailOpen = e.FailOpen
			} else {
				res.Ups++
				res.UpAt = append(res.UpAt, time.Now().UnixNano())
			}
		}})
	if err != nil {
		return err
	}
	if c.PresenceEvery > 0 {
		store.every = c.PresenceEvery
	}
	var paused atomic.Int64
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: c.Rate, Burst: c.Burst, TokensPerMinute: tokensPerMinute,
		Store: store, OnThrottle: func(e httpguard.ThrottleEvent) {
			if e.Reason == httpguard.ThrottlePaused && !e.Rejected {
				paused.Add(1)
			}
		}})
	if err != nil {
		return err
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = c.Concurrency
	hc := &http.Client{Transport: l.Wrap(base)}
	var stop atomic.Bool
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		stop.Store(true)
	}()
	var wg sync.WaitGroup
	var answered sync.Once
	for range c.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := send(hc, c.API, chatBody(c.MaxTokens))
				mu.Lock()
				switch {
				case err == nil:
					res.OK++
					answered.Do(func() { fmt.Println("answered") })
				case err.Error() == "status 429":
					res.TooMany++
				default:
					res.Failed++
					res.FailedSample = err.Error()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := store.Close(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	res.PausedWaits = int(paused.Load())
	res.ServerPauses = l.Stats().ServerPauses
	return json.NewEncoder(os.Stdout).Encode(res)
}

// startLimitFleet starts n "limit" children against api and waits until
// each has had an answer. Child i probes a lost Redis every probes[i],
// when given.
func startLimitFleet(t *testing.T, n int, c childConfig, probes ...time.Duration) []*child {
	t.Helper()
	c.Role = "limit"
	var children []*child
	for i := range n {
		if i < len(probes) {
			c.ProbeInterval = probes[i]
		}
		children = append(children, startChild(t, c))
	}
	for _, ch := range children {
		require.Equal(t, "answered", ch.line(t), ch.stderr)
	}
	return children
}

// stopLimitFleet stops the children and returns their reports.
func stopLimitFleet(t *testing.T, children []*child) []limitResult {
	t.Helper()
	for _, ch := range children {
		fmt.Fprintln(ch.stdin, "stop")
	}
	var out []limitResult
	for _, ch := range children {
		var r limitResult
		require.NoError(t, json.Unmarshal([]byte(ch.line(t)), &r), ch.stderr)
		require.NoError(t, ch.wait(), "the child failed:\n%s", ch.stderr)
		out = append(out, r)
	}
	return out
}

// serverRate is the rate at which requests reach api over d, as the server
// counts them.
func serverRate(api *httpguardtest.Server, d time.Duration) float64 {
	start, before := time.Now(), api.Stats().Requests
	time.Sleep(d)
	return float64(api.Stats().Requests-before) / time.Since(start).Seconds()
}

func TestFleetOfProcessesSendsAtTheConfiguredRate(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{Latency: time.Millisecond})
	// A burst of 20 saves the turns of up to 190ms in which no process
	// asks (all of them descheduled on a loaded machine) and adds at most
	// 2% to a window that starts with it saved; requests whose turns came
	// before the window but that reached the server in it (a child
	// descheduled between its turn and its send: 102.49/s seen once on a
	// loaded machine) add up to 1% more. 32 requests at a time keep each
	// process asking while answers are slow.
	const processes, rate = 4, 100.0
	children := startLimitFleet(t, processes, childConfig{Redis: srv.Addr, API: api.BaseURL(), Name: "fleet-rate",
		Rate: rate, Burst: 20, Concurrency: 32, MaxTokens: 10})
	time.Sleep(500 * time.Millisecond) // past the first burst

	got := serverRate(api, 10*time.Second)

	results := stopLimitFleet(t, children)
	t.Logf("%d processes, each with a Limiter at %v requests/s: the server saw %.2f requests/s", processes, rate, got)
	// The promise is the upper bound: the fleet sends at the configured
	// rate, not processes times it. Below it, the children may simply not
	// get the CPU to ask (CI runs this beside the root package's race
	// tests on 2 cores: 92.4 requests/s seen once), which the bound only
	// checks is no collapse.
	assert.LessOrEqual(t, got, rate*1.03, "the fleet sends at the configured rate, not %d times it", processes)
	assert.GreaterOrEqual(t, got, rate*0.85, "the fleet is served close to the configured rate")
	for i, r := range results {
		assert.Positive(t, r.OK, "process %d sent its share", i)
		assert.Zero(t, r.Failed, r.FailedSample)
	}
}

func TestFleetOfProcessesPausesTogetherOnOneProcesssRateLimit(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	const pause = time.Second
	children := startLimitFleet(t, 3, childConfig{Redis: srv.Addr, API: api.BaseURL(), Name: "fleet-pause",
		Rate: 50, Burst: 2, Concurrency: 4, MaxTokens: 10})

	// The next request, whichever process sends it, gets a 429 asking for a
	// second's pause.
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(pause)))
	for api.Pending() > 0 {
		time.Sleep(time.Millisecond)
	}
	refused := time.Now()
	time.Sleep(100 * time.Millisecond) // requests that had their turn before the pause arrive
	before := api.Stats().Requests
	time.Sleep(pause - 300*time.Millisecond)
	during := api.Stats().Requests - before
	time.Sleep(time.Until(refused.Add(pause + 300*time.Millisecond)))
	after := api.Stats().Requests - before

	results := stopLimitFleet(t, children)
	assert.Zero(t, during, "no process sent a request during the pause")
	assert.Positive(t, after, "they all went on after it")
	var pausers uint64
	for i, r := range results {
		t.Logf("process %d: %+v", i, r)
		assert.Positive(t, r.PausedWaits, "process %d waited for the pause", i)
		assert.Zero(t, r.Failed, r.FailedSample)
		pausers += r.ServerPauses
	}
	assert.Equal(t, uint64(1), pausers, "one process had the 429 and set the pause")
}

func TestFleetOfProcessesFailsOpenToItsShareWhenRedisIsKilled(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{Latency: time.Millisecond})
	// They probe at different intervals, so that they come back one after
	// the other, as a fleet does (the one probing every 20ms comes back
	// about 220ms after the restart, not 20: after 20 failed dials go-redis
	// dials once a second). A process back on Redis alone used to
	// take the whole rate there while the others sent on their thirds:
	// 67 to 74 requests in the second Redis came back. Each counts itself
	// in every 400ms: a process back takes from its third too until the
	// others are back, or for 3·400ms at most.
	const processes, rate, burst, every = 3, 60.0, 6, 400 * time.Millisecond
	children := startLimitFleet(t, processes, childConfig{Redis: srv.Addr, API: api.BaseURL(), Name: "fleet-failover",
		Rate: rate, Burst: burst, Concurrency: 4, MaxTokens: 10, PresenceEvery: every},
		20*time.Millisecond, 250*time.Millisecond, 500*time.Millisecond)
	// Every process has counted the others: each holds a third of the
	// rate while Redis is away.
	client := srv.client(t)
	for deadline := time.Now().Add(10 * time.Second); client.ZCard(context.Background(), presenceKey("httpguard", "fleet-failover")).Val() < processes; {
		require.False(t, time.Now().After(deadline), "the processes never counted themselves in")
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(every * 3 / 2)

	srv.kill()
	time.Sleep(200 * time.Millisecond)
	down := serverRate(api, time.Second)
	restarted := time.Now()
	srv.restart()
	up := serverRate(api, time.Second) // the processes come back within it

	results := stopLimitFleet(t, children)
	t.Logf("the server saw %.1f requests/s while Redis was away, %.1f in the second it came back (limit %v)", down, up, rate)
	// Near the rate, not 3 times it (each process on its own) nor 0 (the
	// Limiter refusing). A second may also see a burst the buckets saved
	// (6 in all, shared or local), and on a loaded machine lose what late
	// timers lose.
	const most, least = 1.05*rate + burst, 0.7 * rate
	assert.LessOrEqual(t, down, most, "each process kept its share: a third of the rate")
	assert.GreaterOrEqual(t, down, least, "each process kept its share: a third of the rate")
	assert.LessOrEqual(t, up, most, "back on Redis, the fleet shares the rate")
	assert.GreaterOrEqual(t, up, least, "back on Redis, the fleet shares the rate")
	for i, r := range results {
		var back []time.Duration
		for _, at := range r.UpAt {
			back = append(back, time.Unix(0, at).Sub(restarted).Round(time.Millisecond))
		}
		t.Logf("process %d: back %v after the restart; %d answered, %d failed over, %d came back", i, back, r.OK, r.Downs, r.Ups)
		assert.Positive(t, r.Downs, "process %d failed over", i)
		assert.True(t, r.FailOpen)
		assert.Positive(t, r.Ups, "and came back by itself")
		assert.Zero(t, r.Failed, "no request failed: %s", r.FailedSample)
	}
}
