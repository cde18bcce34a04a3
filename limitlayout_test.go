package httpguard

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What every request writes of its key, its own store's times included,
// is on one cache line: a keyState starts on a line (its 512 bytes are a
// size class of whole lines, and objects of that size have no header
// before them), its hot fields are within its first line, and what a turn
// only reads is a line pair away.
func TestKeyStateHotLine(t *testing.T) {
	ty := reflect.TypeOf(keyState{})
	assert.EqualValues(t, 512, ty.Size(), "keyState's size: larger, it would have a header before it")
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1})
	require.NoError(t, err)
	for i := range 10 {
		ks := l.addKey(keyID{host: fmt.Sprint(i)}, time.Now())
		assert.Zero(t, reflect.ValueOf(ks).Pointer()%64, "a keyState starts on a line")
	}
	own, _ := ty.FieldByName("own")
	for _, f := range []struct {
		name   string
		offset uintptr
	}{
		{"requests", 0}, {"fast", 0}, {"lastSent", 0}, {"lastGap", 0}, {"sends", 0},
		{"reqs", own.Offset}, {"toks", own.Offset},
	} {
		in := ty
		if f.offset != 0 {
			in = own.Type
		}
		sf, ok := in.FieldByName(f.name)
		if assert.True(t, ok, f.name) {
			assert.LessOrEqual(t, f.offset+sf.Offset+sf.Type.Size(), uintptr(64), "%s is on the first line", f.name)
		}
	}
	paused, _ := own.Type.FieldByName("paused")
	assert.GreaterOrEqual(t, own.Offset+paused.Offset, uintptr(cacheLine), "what a turn only reads is a line pair away")
	for i := range ty.NumField() {
		if f := ty.Field(i); f.Name != "_" && f.Offset > own.Offset {
			assert.GreaterOrEqual(t, f.Offset, uintptr(cacheLine), "%s is a line pair away", f.Name)
		}
	}
}

// Stats counts every request, those of keys the Limiter counts no more
// included: a swept key's count is kept, and so is that of a request that
// counts in a key just after it was swept.
func TestLimiterStatsCountsTheRequestsOfSweptKeys(t *testing.T) {
	l, clk, get := newPathKeyedLimiter(t)
	get("/a")
	get("/a")
	swept := l.last.Load()
	clk.Advance(2 * time.Minute)
	get("/b") // sweeps /a
	require.Equal(t, 1, l.Stats().Keys, "/a swept")
	assert.EqualValues(t, 3, l.Stats().Requests)

	l.count(swept) // a request that found /a just before the sweep
	assert.EqualValues(t, 4, l.Stats().Requests)
	get("/a")
	assert.EqualValues(t, 5, l.Stats().Requests)
}

// A key's turns are taken on the state it offers its Limiter's own store,
// which the store's sweeps keep while the Limiter holds the key and drop,
// once run out, after the Limiter swept the key. A key swept before its
// offer was taken withdraws it: a request that found the key just before
// the sweep takes its turn on a state of the store's, dropped in time.
func TestLimiterKeyOffersItsStateUntilSwept(t *testing.T) {
	l, clk, get := newPathKeyedLimiter(t)
	a := get("/a")
	assert.Same(t, &a.own, a.stored.Load(), "the turn taken on the key's own state")
	clk.Advance(30 * time.Second)
	b := get("/b")
	assert.Equal(t, 2, l.own.Len(), "run out, but held by the Limiter's keys")
	assert.Same(t, &a.own, a.stored.Load())

	clk.Advance(40 * time.Second) // /a idle for 70 s, /b for 40 s
	require.Same(t, b, get("/b"))
	require.Equal(t, 1, l.Stats().Keys, "/a swept")
	assert.Equal(t, 1, l.own.Len(), "/a's state dropped once the key was swept")

	// A request that found /c just before the sweep, which took no turn
	// before it.
	c := l.addKey(keyID{host: "/c"}, clk.Now())
	clk.Advance(2 * time.Minute)
	get("/b") // sweeps
	require.True(t, c.dropped.Load(), "/c swept")
	wait, _, _, err := l.own.takeAt(clk.Now(), c.name, &c.stored, &l.reqs, &l.toks, 0)
	require.NoError(t, err)
	require.Zero(t, wait)
	assert.NotSame(t, &c.own, c.stored.Load(), "the offer withdrawn")
	clk.Advance(2 * time.Second)
	l.own.Len() // sweeps
	l.own.mu.Lock()
	defer l.own.mu.Unlock()
	assert.Nil(t, l.own.lookup(c.name), "/c's state dropped once run out")
}

// What the Limiter's own store is told of a key by name, a server pause or
// a fleet slow-down, is told of the state the key takes its turns on, the
// one it offered, which the store keeps apart from those its sweeps walk.
func TestLimiterOwnStoreFindsAKeysOfferedStateByName(t *testing.T) {
	l, clk, get := newPathKeyedLimiter(t)
	a := get("/a")
	require.Same(t, &a.own, a.stored.Load())
	clk.Advance(time.Second)

	require.NoError(t, l.own.Pause(context.Background(), a.name, time.Second))
	wait, by, _, err := l.own.takeAt(clk.Now(), a.name, &a.stored, &l.reqs, &l.toks, 0)
	require.NoError(t, err)
	assert.Equal(t, ThrottlePaused, by, "the pause holds for the key's turns")
	assert.Equal(t, time.Second, wait)

	_, _, err = l.own.SlowDown(context.Background(), a.name, 0, 100, 0)
	require.NoError(t, err)
	l.own.mu.Lock()
	defer l.own.mu.Unlock()
	assert.NotNil(t, a.own.fleet, "the slow-down counted in the key's state")
	assert.Same(t, &a.own, l.own.lookup(a.name), "one state for the key")
}

// newPathKeyedLimiter returns a Limiter on its own store, of 100
// requests/s, Burst 1 and an IdleTTL of a minute, whose keys are the
// requests' paths, on clk; get sends a request to path through it and
// returns the key used.
func newPathKeyedLimiter(t *testing.T) (l *Limiter, clk *fakeClock, get func(path string) *keyState) {
	t.Helper()
	clk = newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{
		RequestsPerSecond: 100, Burst: 1, IdleTTL: time.Minute,
		Key: func(r *http.Request, _ string) string { return r.URL.Path },
	})
	require.NoError(t, err)
	l.now, l.sleep = clk.Now, clk.Sleep
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	return l, clk, func(path string) *keyState {
		t.Helper()
		_, err := getStatus(t, t.Context(), client, srv.URL+path)
		require.NoError(t, err)
		return l.last.Load()
	}
}

// BenchmarkMemoryLimitStoreSweepHeldKeys is the once-a-second sweep of a
// Limiter's own store, under the store's lock, which stalls every turn
// that finds it due, while the Limiter holds 100k keys whose buckets are
// full again: it drops nothing, as the keys hold their states.
func BenchmarkMemoryLimitStoreSweepHeldKeys(b *testing.B) {
	clk := newFakeClock(moveOn)
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 100, Burst: 1})
	require.NoError(b, err)
	l.now = clk.Now
	for i := range 100_000 {
		ks := l.addKey(keyID{host: fmt.Sprint(i)}, clk.Now())
		_, _, _, err := l.own.takeAt(clk.Now(), ks.name, &ks.stored, &l.reqs, &l.toks, 0)
		require.NoError(b, err)
	}
	clk.Advance(2 * time.Second) // every bucket full again
	require.Equal(b, 100_000, l.own.Len())
	s := l.own
	now := s.elapsed(clk.Now())
	for b.Loop() {
		s.mu.Lock()
		s.sweep(now)
		s.mu.Unlock()
	}
}
