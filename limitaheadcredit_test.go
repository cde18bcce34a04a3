package httpguard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// halfTripAheadStore is an AheadLimitStore across a network of round trip
// rtt, on a fake clock: an ask reaches the memory store half the round
// trip after it is made (the store reads its clock then), and its answer
// comes back half a round trip later. It records the credits given back.
type halfTripAheadStore struct {
	*MemoryLimitStore
	clk *fakeClock
	rtt time.Duration

	mu      sync.Mutex
	credits []int64
}

func (s *halfTripAheadStore) TakeTurnAhead(ctx context.Context, key string, reqs, toks BucketLimit, n int64, ahead time.Duration) (time.Duration, ThrottleReason, int64, error) {
	s.clk.Advance(s.rtt / 2)
	wait, by, end, err := s.takeTurnAhead(ctx, key, reqs, toks, n, ahead)
	s.clk.Advance(s.rtt / 2)
	return wait, by, end, err
}

func (s *halfTripAheadStore) CreditTurn(ctx context.Context, key string, toks BucketLimit, end, n int64) error {
	s.mu.Lock()
	s.credits = append(s.credits, n)
	s.mu.Unlock()
	return s.MemoryLimitStore.CreditTurn(ctx, key, toks, end, n)
}

func (s *halfTripAheadStore) Credits() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.credits...)
}

// availableIn returns the tokens key's bucket holds now in s.
func availableIn(t *testing.T, s *MemoryLimitStore, l *Limiter, key string) float64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.lookup(key)
	require.NotNil(t, st, "key %q", key)
	missing := float64(max(st.toks.Load()-s.clock(), 0)) / float64(l.toks.interval())
	return float64(l.toks.Burst) - missing
}

// holdAheadSetup sends a first request through a Limiter of 10 requests/s
// on a halfTripAheadStore of 20 ms round trips, and moves the clock on to
// where the next request's ask takes its turn 15 ms ahead of its time.
func holdAheadSetup(t *testing.T, h func(n int64, w http.ResponseWriter, r *http.Request)) (*fakeClock, *halfTripAheadStore, *Limiter, string, *http.Client, *arrivals) {
	clk := newFakeClock(block)
	store := &halfTripAheadStore{MemoryLimitStore: newMemoryLimitStore(clk.Now), clk: clk, rtt: 20 * time.Millisecond}
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, TokensPerMinute: 60_000, MaxWait: time.Minute, Store: store}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, h)
	return clk, store, l, srv.URL, client, hits
}

// limChatRequest is a POST of body as JSON to u, with ctx.
func limChatRequest(t *testing.T, ctx context.Context, u, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// Was a bug: a request holding a turn an AheadLimitStore took ahead of its
// time, whose context ended before the turn, never gave the turn's tokens
// back: the key's token budget lost them. They now go back (CreditTurn),
// as the tokens of an answer that used none do.
func TestLimiterCanceledTurnTakenAheadGivesItsTokensBack(t *testing.T) {
	clk, store, l, u, client, hits := holdAheadSetup(t, nil)
	body := limChatBody("m", 500, 1000)
	limPostRead(t, client, u, body) // at once, its store's turn at 10 ms
	key := strings.TrimPrefix(u, "http://") + " m"
	const est = 1500 // its prompt and max_tokens
	require.InDelta(t, 60_000-est+10, availableIn(t, store.MemoryLimitStore, l, key), 1, "taken at 10 ms")

	clk.Advance(65 * time.Millisecond) // at 85 ms: the next turn, at 110 ms, is within the round trip
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(limChatRequest(t, ctx, u, body))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	slept := clk.Slept()
	require.Equal(t, 15*time.Millisecond, slept[len(slept)-1], "holding a turn taken 15 ms ahead")
	cancel()
	err := <-errc
	require.Error(t, err)
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
	require.Len(t, hits.Times(), 1)

	assert.Equal(t, []int64{est}, store.Credits(), "the turn's tokens given back")
	assert.InDelta(t, 60_000-est+95, availableIn(t, store.MemoryLimitStore, l, key), 1,
		"at 105 ms, only the first request's tokens are out, refilled for 95 ms")
}

// Was a bug: a request holding a turn taken ahead of its time was counted
// as sent when it took the turn, and stayed counted when its context ended
// before it: the rate the provider accepted, from which a 429 cuts the
// rate (see slowDown), counted requests never sent. It no longer counts
// them.
func TestLimiterCanceledTurnTakenAheadIsNotCountedAsSent(t *testing.T) {
	clk, _, l, u, client, _ := holdAheadSetup(t, nil)
	body := limChatBody("m", 500, 1000)
	limPostRead(t, client, u, body)
	clk.Advance(65 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(limChatRequest(t, ctx, u, body))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.Error(t, <-errc)

	clk.Advance(200 * time.Millisecond)
	ks := limKey(t, l, strings.TrimPrefix(u, "http://"), "m")
	ks.mu.Lock()
	defer ks.mu.Unlock()
	age := clk.Now().Sub(ks.born)
	assert.InDelta(t, 1, ks.sends.count(age), 1e-9, "requests counted as sent")
}

// Was a bug, as above, for a turn taken ahead that a pause heard since took
// from its request (see heldAhead): the request waits for the pause's end
// and takes a turn again then; the tokens of the turn it lost now go back.
func TestLimiterTurnTakenAheadThatAPauseTookGivesItsTokensBack(t *testing.T) {
	answer := make(chan struct{})
	clk, store, l, u, client, hits := holdAheadSetup(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	body := limChatBody("m", 500, 1000)
	var done atomic.Int64
	go func() { // taken at once; its 429 comes while the next holds its turn
		defer done.Add(1)
		resp, err := client.Do(limChatRequest(t, context.Background(), u, body))
		if assert.NoError(t, err) {
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool { return len(hits.Times()) == 1 }, 5*time.Second, time.Millisecond)
	key := strings.TrimPrefix(u, "http://") + " m"
	const est = 1500 // its prompt and max_tokens
	clk.Advance(65 * time.Millisecond)
	go func() {
		defer done.Add(1)
		resp, err := client.Do(limChatRequest(t, context.Background(), u, body))
		if assert.NoError(t, err) {
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	slept := clk.Slept()
	require.Equal(t, 15*time.Millisecond, slept[len(slept)-1], "holding a turn taken 15 ms ahead")
	close(answer)
	require.Eventually(t, func() bool { return done.Load() == 1 }, 5*time.Second, time.Millisecond)
	// The second request, woken by the pause, asks again and sleeps to
	// its end.
	require.Eventually(t, func() bool {
		s := clk.Slept()
		return clk.Sleeping() == 1 && s[len(s)-1] > time.Second
	}, 5*time.Second, time.Millisecond)

	assert.Equal(t, []int64{est}, store.Credits(), "the lost turn's tokens given back")
	missing := 60_000 - availableIn(t, store.MemoryLimitStore, l, key)
	assert.LessOrEqual(t, missing, float64(est), "only the first request's tokens are out (its 429 kept them)")

	clk.Drive(t, 2, &done)
	require.Len(t, hits.Times(), 2)
}
