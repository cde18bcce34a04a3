package redisguard

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
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

// While Redis is away, a process paces its tokens at its share of the rate
// even when a request is estimated at more than its share of the burst (a
// long prompt with a large max_tokens, in a fleet of many replicas).
// Charging such a request only the share's burst would let each process
// send far more than its share; crediting its overestimate afterwards
// would then refill the bucket it barely took from, and lift the tokens
// limit altogether.
func TestLimitStoreFailOpenShareChargesRequestsLargerThanItsBurst(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: time.Hour})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1000, Burst: 100} // the share: 250 tokens a second, a burst of 25
	take(t, s, "warm", noLimit, noLimit, 0)
	srv.kill()

	for _, c := range []struct {
		key            string
		estimate, used int64
	}{
		{"as estimated", 80, 80},
		{"overestimated", 80, 40},
	} {
		const span = 200 * time.Millisecond
		var used int64
		start := time.Now()
		for time.Since(start) < span {
			wait, _, err := s.Take(ctx, c.key, noLimit, toks, c.estimate)
			require.NoError(t, err)
			if wait == 0 {
				used += c.used
				require.NoError(t, s.Adjust(ctx, c.key, toks, c.used-c.estimate))
				continue
			}
			if time.Since(start)+wait > span {
				break
			}
			time.Sleep(wait)
		}
		elapsed := time.Since(start).Seconds()
		share := 0.25 * (float64(toks.Burst) + toks.Rate*elapsed)
		assert.LessOrEqual(t, float64(used), share+float64(c.estimate),
			"%s: tokens used in %.0fms, against a share of %.0f (and one request)", c.key, elapsed*1000, share)
	}
}

// One replica's 429 pauses the fleet: a replica that has been told of the
// pause (its requests were refused for it) keeps to it when Redis then
// goes away, instead of sending to the provider that said stop as soon as
// its local share takes over.
func TestLimiterKeepsAPauseItReadFromRedisWhenRedisGoesAway(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(30*time.Second)))
	replica := func() *http.Client {
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "paused fleet", ProbeInterval: time.Hour})
		l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, MaxWait: 10 * time.Millisecond, Store: s})
		require.NoError(t, err)
		return &http.Client{Transport: httpguard.Chain(api.Client().Transport, l)}
	}
	a, b := replica(), replica()
	send := func(c *http.Client) (int, error) {
		resp, err := c.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(10)))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	status, err := send(a)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status, "the provider says stop for 30s")
	_, err = send(b)
	require.ErrorIs(t, err, httpguard.ErrRateLimited, "b is told of the pause")
	require.EqualValues(t, 1, api.Stats().Requests)

	srv.kill()
	_, err = send(b)
	assert.ErrorIs(t, err, httpguard.ErrRateLimited, "b still keeps to the pause")
	assert.EqualValues(t, 1, api.Stats().Requests, "nothing reached the provider during its pause")
	srv.restart() // for a's store to count itself out when closed
}

// dropOnce is a proxy to a Redis server that, once armed, loses the next
// reply the server sends (after the server has run the command) by closing
// the client's connection, as a network that fails at the wrong moment
// would. go-redis, with its default MaxRetries, then sends the command
// again on another connection.
type dropOnce struct {
	addr  string
	armed atomic.Bool
}

func newDropOnce(t *testing.T, target string) *dropOnce {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &dropOnce{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(s)
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if err != nil {
						return
					}
					if p.armed.CompareAndSwap(true, false) {
						s.Close()
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// A credit counts once: the store "may admit a little less than the
// limits, never more". A credit whose reply was lost after Redis ran it is
// sent again by go-redis (its default MaxRetries), and gave the tokens back
// twice.
func TestLimitStoreCreditWhoseReplyWasLostCountsOnce(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	proxy := newDropOnce(t, srv.Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.addr}) // go-redis's defaults: 3 retries
	t.Cleanup(func() { client.Close() })
	s := newLimitStore(t, client, LimitStoreConfig{})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1, Burst: 100}
	require.NoError(t, s.Adjust(ctx, "warm-up", toks, 1)) // loads the script
	wait, _ := take(t, s, "k", noLimit, toks, 100)
	require.Zero(t, wait)

	proxy.armed.Store(true)
	require.NoError(t, s.Adjust(ctx, "k", toks, -30))
	require.False(t, proxy.armed.Load(), "the reply was lost")

	_, by := take(t, s, "k", noLimit, toks, 31)
	assert.Equal(t, httpguard.ThrottleTokens, by, "30 tokens given back, not 60")
}

// "The store may admit a little less than the limits, never more", and "a
// correction goes to ... whichever took the request's tokens". The tokens
// of a request taken from the local share while Redis was away are
// corrected when its answer ends: after Redis is back, the credit of its
// overestimate goes to Redis, which never took those tokens, and gives the
// fleet tokens it has already spent.
func TestLimitStoreCreditOfTokensTakenLocallyDoesNotGoToRedis(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	events := make(failovers, 10)
	a := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "switch", FailOpenShare: 0.5, ProbeInterval: 10 * time.Millisecond,
		OnFailover: events.record})
	b := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "switch"})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1, Burst: 100}
	take(t, a, "warm", noLimit, noLimit, 0)

	srv.kill()
	wait, _ := take(t, a, "k", noLimit, toks, 50) // a long stream, estimated at 50 tokens, from the local share
	require.Zero(t, wait)
	require.True(t, events.next(t).Down)
	srv.restart()
	require.False(t, events.next(t).Down)

	wait, _ = take(t, b, "k", noLimit, toks, 100) // the fleet, on Redis, spends the whole burst
	require.Zero(t, wait)
	require.NoError(t, a.Adjust(ctx, "k", toks, -40)) // a's stream ends, having used 10 of its 50

	_, by := take(t, b, "k", noLimit, toks, 1)
	assert.Equal(t, httpguard.ThrottleTokens, by, "Redis took 100 of a burst of 100: nothing is left to give back")
}
