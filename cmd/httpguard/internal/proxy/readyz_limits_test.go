package proxy

import (
	"net/http"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: /readyz answered 503 whenever Redis did not, also for a
// proxy whose Redis holds only limits, which fail open (each proxy paces
// its share of the rate) and serve on: a load balancer or Kubernetes
// following /readyz took every proxy of the fleet out of service for an
// outage the proxies ride out. /readyz now asks Redis only where a budget
// lives there: budgets fail closed, and then requests are refused.
func TestReadyzFollowsRedisOnlyWhenABudgetLivesThere(t *testing.T) {
	rp := startRedisProcess(t)
	rp.kill()
	srv := faultServer(t, httpguardtest.Config{})

	limitsOnly := Config{Upstreams: upstreams(t, srv), Limits: LimitSpec{RPS: 100}}
	limitsOnly.Redis = rp.client()
	r := start(t, limitsOnly)
	assert.Equal(t, http.StatusOK, r.get(t, "/readyz").StatusCode, "ready: its limits fail open")
	resp, out := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer sk-client")
	require.Equal(t, http.StatusOK, resp.StatusCode, "and it serves: %s", out)

	tenantBudget := tenantsConfig(t, srv)
	tenantBudget.Redis = rp.client()
	assert.Equal(t, http.StatusServiceUnavailable, start(t, tenantBudget).get(t, "/readyz").StatusCode, "a tenant's budget fails closed")
	proxyBudget := Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: 1e9}}
	proxyBudget.Redis = rp.client()
	assert.Equal(t, http.StatusServiceUnavailable, start(t, proxyBudget).get(t, "/readyz").StatusCode, "the proxy's budget fails closed")
}
