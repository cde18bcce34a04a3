package redisguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A burst of reservations larger than the client's pool queues for its
// connections, as a LimitStore's Takes do (see takeburst_test.go): a
// reservation that waits there past the Timeout got no answer, but Redis
// answered every call that reached it, at once. A BudgetStore took that
// for Redis not answering and failed over on a Redis that was there:
// every request was then refused for a probe interval at least (a second
// by default), or admitted from a local share beside Redis. 400
// reservations at once on a client of two connections, a millisecond
// each, with a Timeout of 100 ms: 101 to 132 were admitted and the store
// failed over, refusing the rest as if Redis were away. Now the rest fail
// alone, with ErrUnavailable, the store stays on Redis, and their
// releases (Redis may have run them late) go through once the queue
// drains.
func TestABudgetStoreStaysOnRedisWhenABurstOfReservationsQueuesForConnections(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	// A live process's connection is open, and its scripts are loaded
	// (see noscript_test.go for a burst that finds them missing).
	require.True(t, reserve(t, s, lifetime(1, 1), burstCallers+1).OK)
	_, err := s.Settle(context.Background(), "lifetime", 1, 1)
	require.NoError(t, err)
	var admitted, queued atomic.Int64
	var wg sync.WaitGroup
	for i := range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Reserve(context.Background(), lifetime(uint64(2+i), 1), burstCallers+1)
			switch {
			case err == nil:
				if assert.True(t, res.OK, "the Limit has room for every reservation") {
					admitted.Add(1)
				}
			case errors.As(err, new(queuedError)):
				assert.ErrorIs(t, err, ErrUnavailable)
				queued.Add(1)
			default:
				t.Errorf("a reservation failed for another reason than its wait for a connection: %v", err)
			}
		}()
	}
	wg.Wait()
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	t.Logf("%d of %d reservations admitted, %d refused after waiting for a connection", admitted.Load(), burstCallers, queued.Load())
	assert.Positive(t, queued.Load(), "calls ran past the Timeout in the queue: this test needs a longer one")
	s.releasing.Wait() // the refused reservations that reached Redis late are released
	select {
	case e := <-events:
		t.Errorf("Redis answered the releases, yet the store failed over: %v", e.Err)
	default:
	}
	assert.Equal(t, [2]httpguard.Money{1, httpguard.Money(admitted.Load())}, totals(t, s, "lifetime"),
		"Redis holds the admitted reservations' money, and only theirs")
}

// Through a Budget, each admitted request's settlement queues behind the
// burst's reservations too: 400 requests at once (as above) failed the
// store over at a settlement even once the reservations failed alone (86
// to 112 sent, the rest refused as if Redis were away). A charge that
// waited for the client while Redis answered others is sent again, under
// its token, and the store stays on Redis: every charge counts once.
func TestABudgetStaysOnRedisWhenABurstOfRequestsQueuesForConnections(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, queueClient(t, srv), BudgetStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	b := newBurstBudget(t, s)
	request := b.request
	var sent, queued atomic.Int64
	var wg sync.WaitGroup
	for range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := request(); {
			case err == nil:
				sent.Add(1)
			case errors.As(err, new(queuedError)):
				assert.ErrorIs(t, err, ErrUnavailable)
				queued.Add(1)
			default:
				t.Errorf("a request failed for another reason than its wait for a connection: %v", err)
			}
		}()
	}
	wg.Wait()
	s.releasing.Wait() // the charges sent again, and the releases of the reservations refused
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	t.Logf("%d of %d requests sent, %d refused after waiting for a connection", sent.Load(), burstCallers, queued.Load())
	assert.Positive(t, queued.Load(), "calls ran past the Timeout in the queue: this test needs a longer one")
	assert.Equal(t, [2]httpguard.Money{b.charged(), 0}, totals(t, s, b.window()), "Redis counts every charge once, and holds nothing")
}

// burstBudget is a Budget on a store, whose provider answers at once, and
// what it charged.
type burstBudget struct {
	rt      http.RoundTripper
	total   atomic.Int64
	windows atomic.Value
}

// newBurstBudget returns a Budget on s that has sent a request: a live
// process, its connection open and its scripts loaded (see
// noscript_test.go for a burst that finds them missing).
func newBurstBudget(t *testing.T, s *BudgetStore) *burstBudget {
	b := new(burstBudget)
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.MaxBudgetLimit, Prices: testPrices, Store: s,
		OnSettle: func(st httpguard.Settlement) { b.total.Add(int64(st.Charged)); b.windows.Store(st.Window) }})
	require.NoError(t, err)
	b.rt = budget.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":2,"completion_tokens":10}}`))}, nil
	}))
	require.NoError(t, b.request())
	return b
}

func (b *burstBudget) request() error {
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody(100)))
	resp, err := b.rt.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// charged is what the Budget charged, as OnSettle heard.
func (b *burstBudget) charged() httpguard.Money { return httpguard.Money(b.total.Load()) }

// window is the window of the last settlement.
func (b *burstBudget) window() string { return b.windows.Load().(string) }

// A Redis that stalls (SIGSTOP) in the middle of a burst of requests fails
// the store over, and the charges then sent again or kept (of requests
// sent, and the releases of reservations refused) count once when it is
// back: Redis's total is what the Budget charged, and nothing stays held.
func TestABudgetCountsEveryChargeOnceWhenRedisStallsInABurstOfRequests(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, burstClient(t, srv), BudgetStoreConfig{Timeout: burstTimeout, ProbeInterval: burstTimeout / 4, OnFailover: events.record})
	b := newBurstBudget(t, s)
	var wg sync.WaitGroup
	for range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.request()
		}()
	}
	time.Sleep(burstTimeout / 4) // Redis answers the first of the burst
	srv.mu.Lock()
	p := srv.cmd.Process
	srv.mu.Unlock()
	require.NoError(t, p.Signal(syscall.SIGSTOP))
	stalled := time.Now()
	down := events.next(t)
	took := time.Since(stalled)
	wg.Wait()
	require.NoError(t, p.Signal(syscall.SIGCONT))
	t.Logf("failed over %v after Redis stalled: %v", took, down.Err)
	assert.True(t, down.Down)
	assert.Less(t, took, 5*burstTimeout)
	up := events.next(t)
	assert.False(t, up.Down)
	s.releasing.Wait()
	assert.Equal(t, [2]httpguard.Money{b.charged(), 0}, totals(t, s, b.window()), "Redis counts every charge once, and holds nothing")
}

// Failing alone is for calls that Redis answered others around: a Redis
// that stalls (SIGSTOP) in the middle of a burst answers none after, and
// the store fails over within a few Timeouts: the calls of the burst begun
// before its last answer fail alone, and the releases of their
// reservations, begun after it, fail it over.
func TestABudgetStoreFailsOverARedisThatStallsInABurstOfReservations(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newStore(t, burstClient(t, srv), BudgetStoreConfig{Timeout: burstTimeout, ProbeInterval: time.Hour, OnFailover: events.record})
	require.True(t, reserve(t, s, lifetime(1, 1), burstCallers+1).OK)
	_, err := s.Settle(context.Background(), "lifetime", 1, 1)
	require.NoError(t, err)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Reserve(context.Background(), lifetime(uint64(2+i), 1), burstCallers+1)
		}()
	}
	time.Sleep(burstTimeout / 4) // Redis answers the first of the burst
	srv.stall(t)
	stalled := time.Now()
	e := events.next(t)
	took := time.Since(stalled)
	t.Logf("failed over %v after Redis stalled: %v", took, e.Err)
	assert.True(t, e.Down)
	assert.Less(t, took, 5*burstTimeout, "the calls begun after Redis's last answer fail it over at their Timeout")
}
