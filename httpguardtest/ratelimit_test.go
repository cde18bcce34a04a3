package httpguardtest

import (
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refuseSecond sends two requests to a server with a rate limit of one
// request per 20 ms (burst 1) and the given headers, and returns the
// headers of the first answer and of the 429 refusing the second.
func refuseSecond(t *testing.T, h RateLimitHeaders) (ok, refused http.Header) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 50, Burst: 1, RateLimitHeaders: h}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	code, ok, _ := do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, code)
	clock.advance(5 * time.Millisecond)
	code, refused, _ = do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusTooManyRequests, code)
	return ok, refused
}

func TestNoRateLimitHeadersSendsBare429s(t *testing.T) {
	ok, refused := refuseSecond(t, NoRateLimitHeaders)

	for _, h := range []http.Header{ok, refused} {
		for k := range h {
			assert.NotContains(t, []string{"Retry-After", "Retry-After-Ms", "X-Ratelimit-Limit-Requests",
				"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"}, k)
		}
	}
}

func TestCoarseRetryAfterSendsWholeSecondsAndThePreciseReset(t *testing.T) {
	ok, refused := refuseSecond(t, CoarseRetryAfter)

	assert.Equal(t, "1", refused.Get("Retry-After"))
	assert.Equal(t, "15ms", refused.Get("X-Ratelimit-Reset-Requests"))
	assert.Empty(t, refused.Get("Retry-After-Ms"))
	assert.Equal(t, "0", ok.Get("X-Ratelimit-Remaining-Requests"), "other answers keep their headers")
}

func TestAllRateLimitHeadersIsTheDefault(t *testing.T) {
	_, refused := refuseSecond(t, AllRateLimitHeaders)

	assert.Equal(t, "15", refused.Get("Retry-After-Ms"))
	assert.Equal(t, "1", refused.Get("Retry-After"))
}

func TestNewServerRejectsUnknownRateLimitHeaders(t *testing.T) {
	_, err := NewServer(Config{RateLimitHeaders: CoarseRetryAfter + 1})
	assert.ErrorContains(t, err, "RateLimitHeaders")
}

// Was a bug: a rate of a request in over a century made the wait overflow
// a Duration, and the server's 429 said Retry-After: 0 (try again at once)
// for a bucket that would refuse for ages; RateLimited of the largest
// Duration said -9223372036.
func TestAVerySlowRateLimitAnnouncesALongWait(t *testing.T) {
	s, err := NewServer(Config{RequestsPerSecond: 1e-12, Burst: 1})
	require.NoError(t, err)
	defer s.Close()
	var last *http.Response
	for range 2 {
		resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		last = resp
	}
	require.Equal(t, http.StatusTooManyRequests, last.StatusCode)
	secs, err := strconv.ParseInt(last.Header.Get("Retry-After"), 10, 64)
	require.NoError(t, err)
	assert.Greater(t, secs, int64(100*365*24*3600), "a century at least")

	f := RateLimited(math.MaxInt64)
	assert.Equal(t, "9223372037", f.Header.Get("Retry-After"))
	assert.NotContains(t, f.Header.Get("X-Ratelimit-Reset-Requests"), "-")
}

// A request the rate limit refuses but whose client goes away while the
// server holds it (Latency) gets no answer: it is counted in neither
// Status[429] nor RateLimited, which are "in Status[429] too".
func TestRateLimitedCountsOnlyTheRefusalsAnswered(t *testing.T) {
	s, err := NewServer(Config{RequestsPerSecond: 1, Burst: 1, Latency: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 { // the first takes the token, the second is refused
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(chatBody))
			if assert.NoError(t, err) {
				_, err = s.Client().Do(req)
				assert.ErrorIs(t, err, context.Canceled)
			}
		}()
	}
	require.Eventually(t, func() bool { return s.Stats().Requests == 2 }, 5*time.Second, time.Millisecond)
	cancel()
	wg.Wait()
	s.Close() // waits for the handlers, so that the counters are final

	st := s.Stats()
	assert.Zero(t, st.Status[http.StatusTooManyRequests])
	assert.Equal(t, st.Status[http.StatusTooManyRequests], st.RateLimited)
}

// Was a stumble: a Burst or RateLimitHeaders without RequestsPerSecond
// was accepted and limited nothing, as the proxy's --burst without --rps
// did before it was refused.
func TestNewServerRejectsARateLimitSettingWithoutARate(t *testing.T) {
	for _, c := range []Config{{Burst: 5}, {RateLimitHeaders: CoarseRetryAfter}} {
		s, err := NewServer(c)
		assert.ErrorContains(t, err, "needs RequestsPerSecond", "%+v", c)
		assert.Nil(t, s)
		if s != nil {
			s.Close()
		}
	}
}
