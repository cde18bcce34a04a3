package httpguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request queued for its turn when a server pause comes that ends beyond
// what it may wait is refused as the pause comes, as a request arriving
// then is: it used to sleep on to the place it had, then fail, so that a
// caller queued 29 s deep behind a minute's pause waited 29 s for an
// ErrRateLimited it could have had at once ("it never sleeps only to
// fail").
func TestLimiterRefusesAQueuedRequestAtOnceWhenAPauseOutlastsItsWait(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 10 * time.Second}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
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

	close(answer) // the 429: the key pauses for 30 s, beyond the 10 s the queued request may wait
	require.NoError(t, <-first)

	var err error
	select {
	case err = <-queued:
	case <-time.After(5 * time.Second):
		clk.Advance(time.Second) // let it go, to end the test
		err = <-queued
		t.Errorf("the queued request slept on to its place (%v)", err)
	}
	assert.ErrorIs(t, err, ErrRateLimited)
	var le *LimitError
	if assert.True(t, errors.As(err, &le), "%v", err) {
		assert.Equal(t, ThrottlePaused, le.Reason)
	}
	assert.EqualValues(t, 1, hits.n.Load(), "the queued request was not sent")
	assert.Zero(t, clk.Sleeping())
}

// Requests queued when a pause comes that they can wait out are woken and
// queued again behind it: they go once it ends, one by one at the rate,
// none before it.
func TestLimiterRequeuesQueuedRequestsBehindAPauseTheyCanWaitOut(t *testing.T) {
	clk := newFakeClock(block)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, MaxWait: time.Minute}, clk)
	answer := make(chan struct{})
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answer
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	})
	const queued = 3
	errs := make(chan error, queued+1)
	go func() {
		_, err := getStatus(t, context.Background(), client, srv.URL)
		errs <- err
	}()
	require.Eventually(t, func() bool { return hits.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	for range queued {
		go func() {
			_, err := getStatus(t, context.Background(), client, srv.URL)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return clk.Sleeping() == queued }, 5*time.Second, time.Millisecond)
	pausedAt := clk.Now()

	close(answer)
	require.NoError(t, <-errs)
	// Woken, they sleep again, now to places behind the pause.
	require.Eventually(t, func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		if len(clk.waiters) != queued {
			return false
		}
		for _, s := range clk.waiters {
			if s.woken() || s.until.Before(pausedAt.Add(5*time.Second)) {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
	clk.Advance(5 * time.Second)
	for got := 0; got < queued; {
		select {
		case err := <-errs:
			assert.NoError(t, err)
			got++
		case <-time.After(20 * time.Millisecond):
			clk.Advance(10 * time.Millisecond)
		}
	}
	times := hits.Times()
	require.Len(t, times, queued+1)
	for _, at := range times[1:] {
		assert.False(t, at.Before(pausedAt.Add(5*time.Second)), "sent at %v, before the pause ended", at.Sub(pausedAt))
	}
	for _, gap := range hits.gaps(2) {
		assert.GreaterOrEqual(t, gap, 100*time.Millisecond)
	}
}

// A pause another process heard, which a request finds in the shared store
// at its place, wakes the requests asleep behind it too: those it puts
// beyond what they may wait are refused then, not each at its own place.
// They are refused by the pause, as those behind a pause heard here are,
// so that a Fallback gives them to its next target (limitedByServer):
// they named the requests bucket, the reason of the places they had, and
// stayed with a target that had answered 429.
func TestLimiterRefusesTheQueueBehindAPauseFoundInTheStoreAtOnce(t *testing.T) {
	clk := newFakeClock(block)
	store := newMemoryLimitStore(clk.Now)
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: 10 * time.Second, Store: store}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	_, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	const queued = 3
	errs := make(chan error, queued)
	for range queued {
		go func() {
			_, err := getStatus(t, context.Background(), client, srv.URL)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return clk.Sleeping() == queued }, 5*time.Second, time.Millisecond)
	require.NoError(t, store.Pause(context.Background(), keyName(srv, ""), 30*time.Second)) // another process's 429

	clk.Advance(time.Second) // the first wakes at its place and finds the pause
	for i := range queued {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, ErrRateLimited)
			var le *LimitError
			if assert.True(t, errors.As(err, &le), "%v", err) {
				assert.Equal(t, ThrottlePaused, le.Reason, "%v", err)
			}
			assert.True(t, limitedByServer(err), "%v", err)
		case <-time.After(5 * time.Second):
			t.Errorf("%d of the %d queued requests slept on behind the pause", queued-i, queued)
			for range queued - i {
				clk.Advance(time.Minute)
				<-errs
			}
			return
		}
	}
	assert.EqualValues(t, 1, hits.n.Load())
	assert.Zero(t, clk.Sleeping())
}

// TestSleepQueuedWakesAtOnceWhenTheLimiterClosesWake: the Limiter's real
// sleep returns woken when its wake channel is closed, not once its timer
// fires; a context that has ended wins over a wake; a nil wake never wakes.
func TestSleepQueuedWakesAtOnceWhenTheLimiterClosesWake(t *testing.T) {
	wake := make(chan struct{})
	close(wake)
	woken, err := sleepQueued(context.Background(), time.Hour, wake)
	assert.True(t, woken)
	assert.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	woken, err = sleepQueued(ctx, time.Hour, wake)
	assert.False(t, woken, "an ended context is not a wake")
	assert.ErrorIs(t, err, context.Canceled)

	woken, err = sleepQueued(context.Background(), time.Microsecond, nil)
	assert.False(t, woken)
	assert.NoError(t, err)
}
