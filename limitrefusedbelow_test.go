package httpguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A tenant's Limiter above a gateway's: a request the gateway's Limiter
// refuses was never sent, so it does not keep the tenant's tokens (it kept
// them all: five refusals took 55,000 of the minute's 60,000).
func TestStackedLimiterGivesBackTheTokensOfARequestRefusedBelow(t *testing.T) {
	for name, newLimiter := range map[string]func(*testing.T, LimitConfig, *fakeClock) *Limiter{
		"a store of the config": newTestLimiter, "its own store": newOwnLimiter,
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			tenant := newLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
			gateway := newTestLimiter(t, LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: -1}, clk)
			srv, _, _ := newLimitedServer(t, gateway, clk, limAnswerUsage(1000, 1000))
			client := &http.Client{Transport: Chain(srv.Client().Transport, tenant, gateway)}
			key := keyName(srv, "m")

			limPostRead(t, client, srv.URL, limChatBody("m", 1000, 1000))
			require.InDelta(t, 60_000-2000, available(t, tenant, key), 2)
			for range 5 {
				_, err := client.Post(srv.URL, "application/json", strings.NewReader(limChatBody("m", 10_000, 1000)))
				require.ErrorIs(t, err, ErrRateLimited)
			}
			assert.InDelta(t, 60_000-2000, available(t, tenant, key), 2, "the refused requests were never sent")
		})
	}
}

// Was a bug: a request net/http refuses before sending it (a header that
// is not valid HTTP, such as an API key read with its newline) kept its
// token estimate in the Limiter: every such call spent tokens of a bucket
// nothing was sent from, until the key refused the calls that would have
// gone.
func TestLimiterGivesBackTheTokensOfARequestNetHTTPRefuses(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newOwnLimiter(t, LimitConfig{TokensPerMinute: 60_000}, clk)
	srv, _, arrived := newLimitedServer(t, l, clk, limAnswerUsage(1000, 1000))
	client := &http.Client{Transport: Chain(srv.Client().Transport, l)}
	key := keyName(srv, "m")

	limPostRead(t, client, srv.URL, limChatBody("m", 1000, 1000))
	require.InDelta(t, 60_000-2000, available(t, l, key), 2)
	for range 5 {
		req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(limChatBody("m", 10_000, 1000)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-test\n")
		_, err = client.Do(req)
		require.Error(t, err)
	}
	assert.EqualValues(t, 1, arrived.n.Load(), "net/http sent none of them")
	assert.InDelta(t, 60_000-2000, available(t, l, key), 2, "the refused requests were never sent")
}
