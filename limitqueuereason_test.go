package httpguard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTokenQueueLimiter returns a Limiter on clk of 1 request/s (Burst 5)
// and 6,000 tokens a minute, where a request of 5,010 tokens goes and one
// of 2,010 then queues 30 s deep for tokens, and the log of its
// ThrottleEvents.
func newTokenQueueLimiter(t *testing.T, clk *fakeClock) (*Limiter, *throttleLog) {
	events := &throttleLog{}
	l := newOwnLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 5, TokensPerMinute: 6000, MaxWait: time.Minute,
		OnThrottle: events.record}, clk)
	return l, events
}

// newTokenQueue is the rig of the tests of which bucket a wait names: a
// Limiter from newTokenQueueLimiter in front of a loopback server, post
// sending a chat request of maxTokens through it, and a first request of
// 5,010 tokens sent, which leaves the tokens bucket 30 s from room for
// 2,010 more.
func newTokenQueue(t *testing.T) (clk *fakeClock, events *throttleLog, post func(ctx context.Context, maxTokens int) error) {
	t.Helper()
	clk = newFakeClock(block)
	l, events := newTokenQueueLimiter(t, clk)
	srv, client, _ := newLimitedServer(t, l, clk, nil)
	post = func(ctx context.Context, maxTokens int) error {
		_, err := sendStatus(t, ctx, client, http.MethodPost, srv.URL, strings.NewReader(chatBody("m", maxTokens)))
		return err
	}
	require.NoError(t, post(context.Background(), 5000))
	return clk, events, post
}

// assertWaitsNameTokens sends a request of 10 tokens that can wait 100 ms,
// which must be refused naming the tokens bucket, then one that can wait,
// which must be the sleeping-th asleep and told OnThrottle it waits for
// the tokens bucket; done receives its outcome.
func assertWaitsNameTokens(t *testing.T, clk *fakeClock, events *throttleLog, post func(context.Context, int) error, done chan<- error, sleeping int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := post(ctx, 10)
	var le *LimitError
	require.True(t, errors.As(err, &le), "%v", err)
	assert.Equal(t, ThrottleTokens, le.Reason, "%v", err)

	go func() { done <- post(context.Background(), 10) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == sleeping }, 5*time.Second, time.Millisecond)
	seen := events.all()
	last := seen[len(seen)-1]
	assert.False(t, last.Rejected)
	assert.Equal(t, ThrottleTokens, last.Reason, "the wait of the request queued, %v", last.Wait)
}

// throttleLog records a Limiter's ThrottleEvents, as its OnThrottle.
type throttleLog struct {
	mu     sync.Mutex
	events []ThrottleEvent
}

func (l *throttleLog) record(e ThrottleEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// all returns the events recorded so far.
func (l *throttleLog) all() []ThrottleEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ThrottleEvent(nil), l.events...)
}

// A request that waits behind a queue waiting for the tokens bucket is
// told so: its turn is where the tokens the requests ahead of it need
// put it, whatever its own few tokens would take. At 1 request/s (Burst
// 5) and 6,000 tokens a minute, a request of 5,010 tokens goes and one of
// 2,010 queues 30 s deep for tokens; a request of 18 tokens that can wait
// 100 ms was refused "by the requests bucket: the turn is 30.24s away",
// a bucket with room for three more, and one that could wait was told it
// waited for the requests bucket too.
func TestLimiterNamesTheTokensBucketForAWaitBehindAQueueForTokens(t *testing.T) {
	clk, events, post := newTokenQueue(t)
	done := make(chan error, 2)
	go func() { done <- post(context.Background(), 2000) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)

	assertWaitsNameTokens(t, clk, events, post, done, 2)

	clk.Advance(time.Minute)
	require.NoError(t, <-done)
	clk.Advance(time.Minute)
	require.NoError(t, <-done)
}
