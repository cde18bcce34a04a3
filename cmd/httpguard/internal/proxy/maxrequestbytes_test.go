package proxy

import (
	"math"
	"net/http"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: the budgets and limiters read MaxRequestBytes and the
// member the proxy adds to a stream's body, 40 bytes more, and the sum
// overflowed for a MaxRequestBytes within 40 of the largest int64
// (--max-request-bytes 9223372036854775807, "no limit"): the proxy
// refused to start with "budget \"proxy\": httpguard: budget:
// MaxBufferedBody must be >= 0, got -9223372036854775769", naming neither
// the flag nor what was wrong with it.
func TestTheLargestMaxRequestBytesIsTakenWithBudgetsAndLimits(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, MaxRequestBytes: math.MaxInt64,
		Budget: &BudgetSpec{Limit: httpguard.Dollar}, Limits: LimitSpec{RPS: 100}})
	resp, out := r.post(t, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, int64(math.MaxInt64), r.readBytes())
}
