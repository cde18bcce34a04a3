package redisguard

// Tests of the adversarial review of 2026-12-01 (fleet mode on Redis,
// branch h-redis). Each failed on main before its fix.

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

// A 429 to one replica pauses every replica, whatever becomes of the
// request that heard it. The Limiter set the pause in the store with the
// request's context: when that context ended as the 429 came back (the
// caller's deadline, an AttemptTimeout, a client that gave up), the call
// to Redis was cut short and the pause held only in the process that saw
// it, while every other replica went on sending to the provider that said
// stop.
func TestA429PausesTheFleetWhenItsRequestsContextEnds(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, api.Enqueue(httpguardtest.RateLimited(30*time.Second)))
	replica := func(base http.RoundTripper) *http.Client {
		s := newLimitStore(t, srv.client(t), LimitStoreConfig{Name: "paused fleet"})
		l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, MaxWait: 10 * time.Millisecond, Store: s})
		require.NoError(t, err)
		return &http.Client{Transport: httpguard.Chain(base, l)}
	}
	// a's caller gives up as the 429 comes back.
	ctx, cancel := context.WithCancel(context.Background())
	a := replica(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := api.Client().Transport.RoundTrip(r)
		cancel()
		return resp, err
	}))
	b := replica(api.Client().Transport)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.BaseURL()+"/chat/completions", strings.NewReader(chatBody(10)))
	require.NoError(t, err)
	if resp, err := a.Do(req); err == nil {
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the provider says stop for 30s")
		resp.Body.Close()
	}
	require.EqualValues(t, 1, api.Stats().Requests)

	resp, err := b.Post(api.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody(10)))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, httpguard.ErrRateLimited, "b keeps to the pause the provider asked of the account")
	assert.EqualValues(t, 1, api.Stats().Requests, "nothing reached the provider during its pause")
}
