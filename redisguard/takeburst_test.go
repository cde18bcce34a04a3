package redisguard

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A burst of callers larger than the client's pool queues for its
// connections: a call that waits there past the Timeout got no answer,
// but Redis answered every call that reached it, at once. A LimitStore
// took that for Redis not answering and failed over on a Redis that was
// there:
// 3,000 requests arriving at once through a Limiter at 10/s, burst 5, on a
// default client (20 connections on 2 cores), failed it open, and its
// local share added a burst of its own: 17 to 20 requests reached the
// provider within a second where 15 may. Here two connections that take
// 10ms each to send a command make the queue (see queueClient).

// burstClient is a client of srv with go-redis's default options but for a
// pool of two connections, each of which takes a millisecond to send a
// command, as across a network.
func burstClient(t *testing.T, srv *redisServer) redis.UniversalClient {
	return slowClient(t, srv, time.Millisecond)
}

// slowClient is burstClient with connections that take delay to send a
// command.
func slowClient(t *testing.T, srv *redisServer, delay time.Duration) redis.UniversalClient {
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 2})
	client.AddHook(newSlowLink(delay))
	t.Cleanup(func() { client.Close() })
	return client
}

const burstCallers, burstTimeout = 400, 100 * time.Millisecond

// A burst that stays on Redis is a queue that outlasts the Timeout while
// Redis answers each call that reaches it at once, and the store tells
// the two apart by the answers that came within their Timeout meanwhile.
// So neither this process nor Redis may stall for a whole Timeout: with a
// Timeout of 100 ms and a link of a millisecond, the burst's own 400
// goroutines under -race, on two cores beside other tests, kept the first
// call of the burst from its answer for 170 ms, and the store failed over
// (3 runs in 30, and 4 in 30 through a Budget). A queue ten times slower,
// with a Timeout ten times longer, is the same queue, with a tenth of the
// commands to run and ten times the room for a stall.
func queueClient(t *testing.T, srv *redisServer) redis.UniversalClient {
	return slowClient(t, srv, queueLink)
}

const queueLink, queueTimeout = 10 * time.Millisecond, time.Second

// slowLink delays each write on a client's connections by its delay.
type slowLink struct{ delay atomic.Int64 }

func newSlowLink(d time.Duration) *slowLink {
	l := new(slowLink)
	l.setDelay(d)
	return l
}

func (l *slowLink) setDelay(d time.Duration) { l.delay.Store(int64(d)) }

func (l *slowLink) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return slowConn{c, l}, nil
	}
}

func (*slowLink) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (*slowLink) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type slowConn struct {
	net.Conn
	link *slowLink
}

func (c slowConn) Write(b []byte) (int, error) {
	time.Sleep(time.Duration(c.link.delay.Load()))
	return c.Conn.Write(b)
}

func TestALimitStoreStaysOnRedisWhenABurstOfTakesQueuesForConnections(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	s := newLimitStore(t, queueClient(t, srv), LimitStoreConfig{Timeout: queueTimeout, OnFailover: events.record})
	reqs := httpguard.BucketLimit{Rate: 1, Burst: 5}
	take(t, s, "warm", reqs, noLimit, 0) // a live process's connection is open
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	for range burstCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait, by, _, err := s.TakeTurn(context.Background(), "k", reqs, noLimit, 0)
			switch {
			case err != nil:
				failed.Add(1)
			case wait == 0 && by == "":
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	noFailover(t, events)
	assert.False(t, s.link.isDown())
	assert.LessOrEqual(t, admitted.Load(), reqs.Burst, "the burst, and no local share's burst on top")
	assert.Positive(t, failed.Load(), "calls ran past the Timeout in the queue: this test needs a longer one")
}

// A Redis that has turned slow, answering each call later than the
// Timeout, is one that does not answer: its late answers say nothing of
// the calls still waiting. Counted as answers, each late one made the
// calls begun before it fail alone, and the store did not fail over while
// Redis went on answering late: the Limiter refused every request instead
// of failing open to its share.
func TestALateAnswerDoesNotMakeACallThatRanOutOfTimeoutOneThatQueued(t *testing.T) {
	var heard atomic.Int64
	c := caller{timeout: 100 * time.Millisecond}.alone(&heard)
	late := func(context.Context) (any, error) { time.Sleep(130 * time.Millisecond); return "late", nil }
	first := make(chan error, 1)
	go func() {
		_, err := c.do(context.Background(), late)
		first <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_, err := c.do(context.Background(), late) // runs out of Timeout after the first's late answer
	require.ErrorContains(t, <-first, "no answer within")
	require.Error(t, err)
	assert.False(t, errors.As(err, new(queuedError)), "the only answer came after its call's Timeout: Redis is slow, not busy: %v", err)
}
