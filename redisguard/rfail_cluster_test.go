package redisguard

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// twoNodeCluster starts a Redis Cluster of two nodes, a serving slots
// 0-8191 and b 8192-16383, and returns them once the cluster is ok.
func twoNodeCluster(t *testing.T) (a, b *redisServer) {
	a = startRedis(t, redisOptions{cluster: true, noSlots: true})
	b = startRedis(t, redisOptions{cluster: true, noSlots: true})
	ctx := context.Background()
	ca, cb := redis.NewClient(&redis.Options{Addr: a.Addr}), redis.NewClient(&redis.Options{Addr: b.Addr})
	defer ca.Close()
	defer cb.Close()
	require.NoError(t, ca.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "8191").Err())
	require.NoError(t, cb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "8192", "16383").Err())
	host, port, _ := strings.Cut(b.Addr, ":")
	require.NoError(t, ca.Do(ctx, "CLUSTER", "MEET", host, port).Err())
	for deadline := time.Now().Add(10 * time.Second); ; {
		ia, erra := ca.ClusterInfo(ctx).Result()
		ib, errb := cb.ClusterInfo(ctx).Result()
		if erra == nil && errb == nil && strings.Contains(ia, "cluster_state:ok") && strings.Contains(ib, "cluster_state:ok") &&
			strings.Contains(ia, "cluster_known_nodes:2") && strings.Contains(ib, "cluster_known_nodes:2") {
			return a, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster is not ok after 10s: %v %v\n%s\n%s", erra, errb, ia, ib)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stall stops the server's process (SIGSTOP) until the test ends: it keeps
// its connections and answers nothing.
func (s *redisServer) stall(t *testing.T) {
	s.mu.Lock()
	p := s.cmd.Process
	s.mu.Unlock()
	require.NoError(t, p.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { p.Signal(syscall.SIGCONT) })
}

// On a Cluster, the node serving a limiter key stalls (SIGSTOP) while the
// node of the store's presence set answers, and every caller's deadline is
// shorter than the Timeout. The check after a call its caller ended asked
// the presence set's node, which answered: the store never failed over,
// and every request on the key failed at its deadline. The check now asks
// about the key the call was for, on its node.
func TestShortCallerDeadlinesFailOverAStalledClusterNodeOfTheKey(t *testing.T) {
	a, b := twoNodeCluster(t)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{a.Addr, b.Addr}, ContextTimeoutEnabled: true,
		DialTimeout: testDialTimeout, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	const timeout = 300 * time.Millisecond
	events := make(failovers, 10)
	l := newLimitStore(t, client, LimitStoreConfig{Timeout: timeout, ProbeInterval: time.Hour, OnFailover: events.record})
	ctx := context.Background()
	slot := func(key string) int64 {
		n, err := client.ClusterKeySlot(ctx, key).Result()
		require.NoError(t, err)
		return n
	}
	// a key of the node that does not serve the presence set, which stalls
	onA := func(key string) bool { return slot(key) < 8192 }
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); onA(l.keys.of(k).pause) != onA(l.presence) {
			key = k
		}
	}
	take(t, l, key, noLimit, noLimit, 0)
	if onA(l.presence) {
		b.stall(t)
	} else {
		a.stall(t)
	}
	start := time.Now()
	failed := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		wait, _, err := l.Take(ctx, key, noLimit, noLimit, 0)
		cancel()
		if err == nil {
			require.Zero(t, wait)
			break
		}
		failed++
		if time.Since(start) > 10*timeout {
			t.Fatalf("after %v and %d requests that failed at their deadline, the store has not failed over", time.Since(start).Round(time.Millisecond), failed)
		}
	}
	require.True(t, events.next(t).Down)
	t.Logf("failed over after %v, %d requests failed meanwhile", time.Since(start).Round(time.Millisecond), failed)
}
