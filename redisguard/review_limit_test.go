package redisguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// While Redis is away, a process paces its tokens at its share of the rate
// even when a request is estimated at more than its share of the burst (a
// long prompt with a large max_tokens, in a fleet of many replicas).
// Charging such a request only the share's burst would let each process
// send far more than its share; crediting its overestimate afterwards
// would then refill the bucket it barely took from, and lift the tokens
// limit altogether.
func TestLimitStoreFailOpenShareChargesRequestsLargerThanItsBurst(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: time.Hour})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1000, Burst: 100} // the share: 250 tokens a second, a burst of 25
	take(t, s, "warm", noLimit, noLimit, 0)
	srv.kill()

	for _, c := range []struct {
		key            string
		estimate, used int64
	}{
		{"as estimated", 80, 80},
		{"overestimated", 80, 40},
	} {
		const span = 200 * time.Millisecond
		var used int64
		start := time.Now()
		for time.Since(start) < span {
			wait, _, err := s.Take(ctx, c.key, noLimit, toks, c.estimate)
			require.NoError(t, err)
			if wait == 0 {
				used += c.used
				require.NoError(t, s.Adjust(ctx, c.key, toks, c.used-c.estimate))
				continue
			}
			if time.Since(start)+wait > span {
				break
			}
			time.Sleep(wait)
		}
		elapsed := time.Since(start).Seconds()
		share := 0.25 * (float64(toks.Burst) + toks.Rate*elapsed)
		assert.LessOrEqual(t, float64(used), share+float64(c.estimate),
			"%s: tokens used in %.0fms, against a share of %.0f (and one request)", c.key, elapsed*1000, share)
	}
}

// One replica's 429 pauses the fleet: a replica that has been told of the
// pause (its requests were refused for it) keeps to it when Redis then
// goes away, instead of sending to the provider that said stop as soon as
// its local share takes over.
func TestLimiterKeepsAPauseItReadFromRedisWhenRedisGoesAway(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(30*time.Second)))
	replica := func() *http.Client {
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "paused fleet", ProbeInterval: time.Hour})
		l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, MaxWait: 10 * time.Millisecond, Store: s})
		require.NoError(t, err)
		return &http.Client{Transport: httpguard.Chain(api.Client().Transport, l)}
	}
	a, b := replica(), replica()
	send := func(c *http.Client) (int, error) {
		resp, err := c.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(10)))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	status, err := send(a)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status, "the provider says stop for 30s")
	_, err = send(b)
	require.ErrorIs(t, err, httpguard.ErrRateLimited, "b is told of the pause")
	require.EqualValues(t, 1, api.Stats().Requests)

	srv.kill()
	_, err = send(b)
	assert.ErrorIs(t, err, httpguard.ErrRateLimited, "b still keeps to the pause")
	assert.EqualValues(t, 1, api.Stats().Requests, "nothing reached the provider during its pause")
	srv.restart() // for a's store to count itself out when closed
}
