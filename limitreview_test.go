package httpguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 429 that lowers the rate moves the queue's places back, as a pause
// does: a request it puts beyond what it may wait is refused then, not
// once it has slept to the place it had ("it never sleeps only to fail").
func TestLimiterRefusesAQueuedRequestAtOnceWhenALoweredRateOutlastsItsWait(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 1200 * time.Millisecond}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.WriteHeader(http.StatusTooManyRequests) // no Retry-After: the rate goes down to 0.7/s
			return
		}
		io.WriteString(w, "ok")
	})
	first := make(chan error, 1)
	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		first <- err
	}()
	require.Eventually(t, func() bool { return hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	queued := make(chan error, 1)
	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		queued <- err
	}()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond, "the second request waits for its turn, a second away")

	close(answer) // its turn moves to 1/0.7 s ≈ 1.43 s, beyond the 1.2 s it may wait
	require.NoError(t, <-first)

	var err error
	select {
	case err = <-queued:
	case <-time.After(5 * time.Second):
		clk.Advance(time.Second)
		err = <-queued
		t.Errorf("the queued request slept on to its place (%v)", err)
	}
	var le *LimitError
	if assert.True(t, errors.As(err, &le), "%v", err) {
		assert.Equal(t, ThrottleRequests, le.Reason)
		assert.True(t, limitedByServer(err), "a rate the 429 lowered")
	}
	assert.EqualValues(t, 1, hits.n.Load(), "the queued request was not sent")
	assert.Zero(t, clk.Sleeping())
}

// A key whose request is in flight for longer than a second looks idle to
// the sweep of crowded keys, which drops it; the 429 that request then
// hears lowers the rate of the key the Limiter holds, not of the state it
// dropped, which nobody reads again.
func TestLimiterLowersTheRateOfAKeySweptWhileItsRequestRan(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		done <- err
	}()
	require.Eventually(t, func() bool { return hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	flood, err := http.NewRequest(http.MethodPost, "http://flood.test/v1/chat/completions", nil)
	require.NoError(t, err)
	for i := range 2 * crowdedKeys {
		l.key(flood, "made-up-"+strconv.Itoa(i), false, clk.Now())
		clk.Advance(time.Millisecond) // the answer takes two seconds
	}
	require.Less(t, l.Stats().Keys, 2*crowdedKeys, "the crowded keys were swept")

	close(answer)
	require.NoError(t, <-done)
	assert.InDelta(t, 7, keyRate(t, l, srv), 1e-9, "the 429 lowered the key's rate")
	assert.EqualValues(t, 1, l.Stats().SlowDowns)
}

// A sweep passes over the keys used within the idle time it sweeps without
// taking their locks, which it would only release: under a hundred
// thousand keys busy within the second, a sweep of crowded keys took each
// key's lock while holding the Limiter's, which every request to a key
// other than the last one used waits for.
func TestLimiterSweepTakesNoLockOfAKeyUsedLately(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1}, clk)
	busy := limKey(t, l, "h", "busy")
	var p place
	_, _, err := l.turn(context.Background(), busy, &p, 0, clk.Now(), anyWait)
	require.NoError(t, err)
	clk.Advance(time.Second / 2)

	busy.mu.Lock() // as if a request held it
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.sweep(clk.Now(), time.Second)
	}()
	select {
	case <-swept:
	case <-time.After(5 * time.Second):
		t.Error("the sweep waited for the lock of a key used half a second ago")
	}
	busy.mu.Unlock()
	<-swept
	assert.Same(t, busy, limKey(t, l, "h", "busy"))
}
