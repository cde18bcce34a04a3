package httpguard

// Adversarial tests of the Limiter, the Retrier and the Breaker, written by
// a review; each failed before its fix. Each comment says what went wrong.

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (Limiter, ghost places): a waiter whose context ends gives its place
// back only when it holds the last place of the queue (leaveLocked). When
// the waiters of a queue are cancelled in the order they came (or in any
// order but the reverse one: an errgroup cancelling its calls, clients
// with one timeout), every place but the last stays taken by nobody: the
// queue's next place stays in the future, and later callers wait behind
// ghosts, or are refused with ErrRateLimited, while the bucket is full and
// nobody waits. Each such round adds its ghosts: the key can be frozen for
// as long as MaxWait, round after round.
func TestLimiterCancelledWaitersLeaveNoGhostPlaces(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)

	// Five callers queue for the next five turns, then give up, first
	// come first gone.
	const waiters = 5
	cancels := make([]context.CancelFunc, waiters)
	dones := make([]chan error, waiters)
	for i := range waiters {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], dones[i] = cancel, make(chan error, 1)
		go func() {
			_, err := getStatus(t, ctx, client, srv.URL)
			dones[i] <- err
		}()
		require.Eventually(t, func() bool { return clk.Sleeping() == i+1 }, 5*time.Second, time.Millisecond, "waiter %d", i)
	}
	for i := range waiters {
		cancels[i]()
		require.ErrorIs(t, <-dones[i], context.Canceled)
	}
	require.Zero(t, clk.Sleeping())

	// Two seconds later the bucket is full and nobody waits: the next
	// request goes at once, even one that cannot wait a second.
	clk.Advance(2 * time.Second)
	before := len(clk.Slept())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = getStatus(t, ctx, client, srv.URL)
	assert.NoError(t, err, "nobody waits and the bucket is full, yet the request is refused")
	assert.Empty(t, clk.Slept()[before:], "the request waited behind the places of cancelled callers")
	assert.EqualValues(t, 2, hits.n.Load())
	assert.Zero(t, l.Stats().Rejected)
}

// Was a bug (Limiter, ghost places, the severe form): the same leak needs no
// cancellation. A request refused for MaxWait takes a place in the queue
// (turn), unlocks, then gives it back (acquire → leave), which works only
// if nobody took a place behind it in between. Under concurrent callers
// somebody often has, so a storm of refused requests leaves the queue's
// next place minutes in the future (measured: 1 to 11 minutes after
// 16,000 refusals at 1 request/s) with nobody waiting: the key refuses
// every request, ErrRateLimited "by the requests bucket", while the bucket
// is full. The refusals themselves keep the key frozen.
func TestLimiterStormOfRefusalsDoesNotFreezeTheKey(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 100 * time.Millisecond}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)

	for round := 1; round <= 10; round++ {
		// The bucket holds one request: this one takes it.
		_, err := getStatus(t, context.Background(), client, srv.URL)
		require.NoError(t, err, "round %d: nobody waits and the bucket is full, yet the request is refused", round)
		require.EqualValues(t, round, hits.n.Load())

		// Callers keep coming, all refused: the next turn is 1s away.
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 500 {
					_, err := getStatus(t, context.Background(), client, srv.URL)
					if !assert.ErrorIs(t, err, ErrRateLimited) {
						return
					}
				}
			}()
		}
		wg.Wait()
		require.Zero(t, clk.Sleeping())
		clk.Advance(2 * time.Second)
	}
}

// Was a bug (Breaker, compressed streams): the stream check scans the bytes of
// the body as they come, whatever the answer's Content-Encoding. A caller
// that asks for compression itself (Accept-Encoding: gzip; net/http then
// leaves the body compressed) gets a whole chat stream, [DONE] included,
// turned into io.ErrUnexpectedEOF at its end, and the circuit counts a
// failure for every such healthy answer: ConsecutiveFailures of them open
// it on a provider that is up.
func TestBreakerDoesNotCutACompressedChatStream(t *testing.T) {
	stream := openAIChunk + openAIChunk + openAIDone
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, stream)
		zw.Close()
	})
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
	c := clientFor(t, r.b)

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	require.NoError(t, err, "the gzip header came through")
	got, err := io.ReadAll(zr)

	assert.NoError(t, err, "a whole stream, [DONE] included, reported as cut")
	assert.Equal(t, stream, string(got))
	assert.Equal(t, CircuitClosed, r.stats(t).State, "a healthy answer counted as a failure")
}

// slowStore is a LimitStore whose Take is slow on its first call, as a
// shared store's round trip is under load; like a Redis client, it gives
// up when the call's context ends.
type slowStore struct {
	LimitStore
	calls   sync.Mutex
	slow    bool
	stalled chan struct{} // closed as the first Take starts to wait
}

func (s *slowStore) Take(ctx context.Context, key string, reqs, toks BucketLimit, n int64) (time.Duration, ThrottleReason, error) {
	s.calls.Lock()
	slow := !s.slow
	s.slow = true
	s.calls.Unlock()
	if slow {
		close(s.stalled)
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(10 * time.Second): // the attempt's timeout did not end it
		}
	}
	return s.LimitStore.Take(ctx, key, reqs, toks, n)
}

// Was a bug (Retrier, AttemptTimeout below a Limiter): the AttemptTimeout runs
// while a Limiter (or a Budget) below works outside its queue, as when
// its shared store is slow. When it fires there, the attempt's context
// ends, the layer reports that end as its refusal (context.Canceled,
// marked with Refuse), and send keeps a refusal as it is: the caller, who
// cancelled nothing, gets a *RetryError with 0 attempts that unwraps to
// context.Canceled, neither ErrAttemptTimeout nor a retry, though
// RetryPolicy.AttemptTimeout promises that an attempt that times out fails
// with ErrAttemptTimeout and is retried.
func TestAttemptTimeoutInsideALimiterIsAnAttemptTimeoutNotACancel(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, "ok") })
	store := &slowStore{LimitStore: NewMemoryLimitStore(), stalled: make(chan struct{})}
	limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 1000, Burst: 1, Store: store})
	require.NoError(t, err)
	// The first attempt's timeout fires while the store stalls; the retry
	// has all the time it needs (a real 20ms timeout also ended it, now and
	// then, on a loaded machine).
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Hour
	retrier, sl := newTestRetrier(t, p)
	var attempts atomic.Int32
	retrier.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == p.AttemptTimeout && attempts.Add(1) == 1 {
			go func() {
				select {
				case <-store.stalled:
					f()
				case <-t.Context().Done():
				}
			}()
		}
		return time.AfterFunc(d, f)
	}
	c := clientFor(t, retrier, limiter)

	resp, err := c.Get(s.URL)
	if err == nil {
		resp.Body.Close()
	}

	assert.False(t, errors.Is(err, context.Canceled), "the caller cancelled nothing, yet gets context.Canceled: %v", err)
	if err != nil {
		assert.ErrorIs(t, err, ErrAttemptTimeout)
	}
	assert.Len(t, sl.all(), 1, "the attempt that timed out is retried")
}
