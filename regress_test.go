package httpguard

// Regressions that a review of the day's fixes found in them; each test
// failed before its fix. Each comment names the change that had broken it.

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression (2947439, leaveLocked's reset when the last waiter leaves): the
// reset moves the queue's next place to "a gap after the last request
// sent", but counts that gap with the requests bucket alone. Where the
// tokens bucket sets the gap (l.gap: a request's tokens take longer to
// refill than the request), a waiter that gives up lets the next request
// skip the tokens spacing of the request sent before it: it is scheduled
// as if the last request had cost no tokens, far earlier than had the
// cancelled waiter never come.
func TestLimiterCancelledWaiterDoesNotShortenTheTokensGap(t *testing.T) {
	clk := newFakeClock(block)
	// 10 requests/s (100ms apart) and 1000 tokens/s: a request of about
	// 1000 tokens takes a place about a second long in the queue.
	l := newTestLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 1, TokensPerMinute: 60_000}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, nil)
	const body = `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	post := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	gap, _ := l.gap(&keyState{rate: 10}, 1000)
	require.Greater(t, gap, 900*time.Millisecond, "the tokens set the gap")

	require.NoError(t, post(context.Background())) // A: sent at once
	// B: the requests bucket is empty for 100ms: B queues, its place a
	// tokens gap long.
	bDone := make(chan error, 1)
	go func() { bDone <- post(context.Background()) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 }, 5*time.Second, time.Millisecond)
	// C queues behind B, a tokens gap after it, then gives up.
	cCtx, cCancel := context.WithCancel(context.Background())
	cDone := make(chan error, 1)
	go func() { cDone <- post(cCtx) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 2 }, 5*time.Second, time.Millisecond)
	clk.Advance(100 * time.Millisecond)
	require.NoError(t, <-bDone) // B is sent from its place
	require.EqualValues(t, 2, hits.n.Load())
	cCancel()
	require.ErrorIs(t, <-cDone, context.Canceled)
	require.Zero(t, clk.Sleeping())

	// D comes now. Had C never come, D would wait for B's tokens gap, as C
	// did; C's leaving must not change that.
	before := len(clk.Slept())
	dCtx, dCancel := context.WithCancel(context.Background())
	dDone := make(chan error, 1)
	go func() { dDone <- post(dCtx) }()
	require.Eventually(t, func() bool { return clk.Sleeping() == 1 || len(clk.Slept()) > before || hits.n.Load() == 3 },
		5*time.Second, time.Millisecond)
	slept := clk.Slept()[before:]
	dCancel()
	<-dDone
	require.Len(t, slept, 1, "D went at once, skipping the tokens gap of B")
	assert.GreaterOrEqual(t, slept[0], gap-100*time.Millisecond,
		"D waits %v: C's leaving cut the tokens gap after B (%v) down to the requests interval", slept[0], gap)
}

// Regression (1fe4b6e, data after a stream's end spoils its usage): a blank
// data line after [DONE] is meant to be harmless, but stepValueSpace judges
// it on the byte after "data: " in the same write; when a read ends right
// there, the line counts as not blank and the usage as not ok, so the
// attempt is charged its whole reservation. The same stream reads ok or not
// depending on how TCP cut it. Before, nothing after [DONE] was read.
func TestSSEBlankDataLineAfterDoneSplitAcrossReadsIsHarmless(t *testing.T) {
	const head = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n" +
		"data: [DONE]\n\ndata: "
	for _, writes := range [][]string{
		{head + "\n\n"}, // one read: ok on main too
		{head, "\n\n"},  // the read ends after "data: "
		{head[:len(head)-1], " \n\n"},
	} {
		var s sseScanner
		for _, w := range writes {
			s.write([]byte(w))
		}
		u, ok := s.result(true)
		assert.True(t, ok, "reads %q: a blank data line after [DONE] spoiled the usage", writes)
		assert.Equal(t, Usage{InputTokens: 3, OutputTokens: 1}, u, "reads %q", writes)
	}
}

// Regression (bc7b67e, a plugged Backoff's wait over max(MaxDelay,
// MaxServerDelay) stops retrying): aimed at go-retryablehttp's
// DefaultBackoff echoing Retry-After uncapped, it also cuts a Backoff whose
// waits grow past MaxDelay by design. go-retryablehttp's
// LinearJitterBackoff waits min·(attempt+1): with BaseDelay = MaxDelay =
// 25s the third retry's 75s is over 60s, and no response asked for a wait,
// yet the retries stop one short of MaxRetries.
func TestRetrierLinearBackoffIsNotCutWithoutAServerWait(t *testing.T) {
	s := newServer(t, failFirst(3, 503, nil))
	p := DefaultRetryPolicy()
	p.MaxRetries, p.BaseDelay, p.MaxDelay = 3, 25*time.Second, 25*time.Second
	p.Backoff = func(min, max time.Duration, n int, _ *http.Response) time.Duration { // LinearJitterBackoff when max <= min
		return min * time.Duration(n+1)
	}
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 200, resp.StatusCode, "the third retry was not made")
	assert.EqualValues(t, 4, s.hits.Load())
	assert.Equal(t, []time.Duration{25 * time.Second, 50 * time.Second, 75 * time.Second}, sl.all())
}
