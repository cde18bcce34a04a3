package redisguard

import (
	"context"
	"io"
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

// gate is a proxy to a Redis server that can be shut, as a network path
// that fails: shut closes its connections and refuses new ones.
type gate struct {
	addr string
	shut atomic.Bool
	mu   sync.Mutex
	cs   []net.Conn
}

func newGate(t *testing.T, target string) *gate {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &gate{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			g.mu.Lock()
			if err != nil || g.shut.Load() {
				g.mu.Unlock()
				c.Close()
				if s != nil {
					s.Close()
				}
				continue
			}
			g.cs = append(g.cs, c, s)
			g.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(func() { l.Close(); g.close(true) })
	return g
}

func (g *gate) close(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut.Store(shut)
	for _, c := range g.cs {
		c.Close()
	}
	g.cs = nil
}

// Redis flaps: b comes back in the blip and counts itself in, then loses
// Redis again; when Redis is back for good, a comes back first. It counted
// b as back from b's count in the blip, and took Redis's whole rate while
// b still sent on its share: 31 admitted in 500ms at 40/s, burst 2 (23 at
// most with b's share's burst). a now counts only the stores counted in
// since its last failed probe: 20.
func TestLimitStoreDoesNotCountAsBackAStoreThatLostRedisAgain(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	ga, gb := newGate(t, srv.Addr), newGate(t, srv.Addr)
	ea, eb := make(failovers, 10), make(failovers, 10)
	client := func(addr string) redis.UniversalClient {
		c := redis.NewClient(testClientOptions(addr))
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := newLimitStore(t, client(ga.addr), LimitStoreConfig{Name: "flap", ProbeInterval: 10 * time.Millisecond, OnFailover: ea.record})
	b := newLimitStore(t, client(gb.addr), LimitStoreConfig{Name: "flap", ProbeInterval: 10 * time.Millisecond, OnFailover: eb.record})
	ctx := context.Background()
	for range 2 {
		require.NoError(t, a.countIn(ctx))
		require.NoError(t, b.countIn(ctx))
	}
	require.Equal(t, 0.5, a.share())

	ga.close(true)
	gb.close(true)
	take(t, a, "warm", noLimit, noLimit, 0)
	take(t, b, "warm", noLimit, noLimit, 0)
	require.True(t, ea.next(t).Down)
	require.True(t, eb.next(t).Down)
	srv.kill()
	srv.restart()
	gb.shut.Store(false) // the blip, for b alone: a's probe is not due
	require.False(t, eb.next(t).Down)
	srv.kill() // Redis goes again
	take(t, b, "warm", noLimit, noLimit, 0)
	require.True(t, eb.next(t).Down)
	gb.close(true) // b's probe not due when Redis is back
	srv.restart()
	ga.close(false)
	require.False(t, ea.next(t).Down)

	const rate, burst = 40.0, 2
	reqs := httpguard.BucketLimit{Rate: rate, Burst: burst}
	var n atomic.Int32 // admitted by calls that ended within the 500ms
	stop := time.Now().Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for _, s := range []*LimitStore{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				wait, _, err := s.Take(ctx, "k", reqs, noLimit, 0)
				switch {
				case err != nil:
					t.Error(err)
					return
				case wait == 0 && time.Now().Before(stop):
					n.Add(1)
				case wait == 0:
				default:
					time.Sleep(min(wait, time.Until(stop)+time.Millisecond))
				}
			}
		}()
	}
	wg.Wait()
	bound := rate*0.5 + burst + 1 // and b's share's burst; each share's is 1
	t.Logf("admitted %d in 500ms with b still away, bound %.0f; a rejoining: %v", n.Load(), bound, a.rejoin.on.Load())
	assert.LessOrEqual(t, float64(n.Load()), bound)
}
