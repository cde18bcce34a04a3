package httpguard

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiterKeepsAKeyWhoseTurnsAreAllTakenAtOnce(t *testing.T) {
	l, clk, get := newPathKeyedLimiter(t) // its own store, which takeFast needs
	get("/busy")
	clk.Advance(50 * time.Second)
	before := l.last.Load().lastUsed.Load()
	get("/busy") // a full bucket: the turn is taken without the key's lock
	require.Equal(t, 1, l.Stats().Keys)
	require.Equal(t, before, l.last.Load().lastUsed.Load(), "taken without the lock")

	clk.Advance(50 * time.Second) // 100 s after the first request, 50 s after the last
	get("/other")
	require.Equal(t, 2, l.Stats().Keys, "used 50 s ago, within IdleTTL: kept")

	clk.Advance(2 * time.Minute)
	get("/other")
	require.Equal(t, 1, l.Stats().Keys, "idle for longer than IdleTTL: dropped")
}

// BenchmarkTakeFast measures a turn taken without ks.mu, the path of most
// requests, alone and from every core at once: what it writes on the
// key's shared lines shows in the parallel case.
func BenchmarkTakeFast(b *testing.B) {
	lim, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1 << 30, TokensPerMinute: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", nil)
	if err != nil {
		b.Fatal(err)
	}
	ks := lim.key(req, "gpt-4o-mini", false, time.Now())
	if _, _, _, _, err := lim.take(req.Context(), ks, 10, time.Now(), 0); err != nil {
		b.Fatal(err)
	}
	take := func() {
		if _, ok := lim.takeFast(ks, 10, time.Now()); !ok {
			b.Fatal("the lane is closed")
		}
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			take()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				take()
			}
		})
	})
}
