package httpguard

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Azure runs a request on the deployment its path names, whatever model
// its body names (most name none), and each deployment has its own limits
// and outages: a Breaker's circuits and a Limiter's buckets are the
// deployment's, not one for the whole resource.
func TestKeysAreTheDeploymentThatRunsTheRequest(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {})
	prices := PriceTable{FallbackModel: {Input: 1, Output: 1}}
	for _, withBudget := range []bool{false, true} {
		var mu sync.Mutex
		var keys []string
		key := func(_ *http.Request, model string) string {
			mu.Lock()
			defer mu.Unlock()
			keys = append(keys, model)
			return model
		}
		b, err := NewBreaker(BreakerConfig{Key: key})
		require.NoError(t, err)
		l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e6, Burst: 100, Key: key})
		require.NoError(t, err)
		layers := []Layer{b, l}
		if withBudget {
			layers = []Layer{newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices}), b, l}
		}
		c := clientFor(t, layers...)
		for _, path := range []string{"/openai/deployments/prod-a/chat/completions", "/engines/prod-b/completions", "/v1/chat/completions"} {
			resp, err := c.Post(srv.URL+path, "application/json", strings.NewReader(`{"model":"gpt-4o","max_tokens":1,"messages":[]}`))
			require.NoError(t, err)
			resp.Body.Close()
		}
		// The Breaker, then the Limiter, for each request.
		assert.Equal(t, []string{"prod-a", "prod-a", "prod-b", "prod-b", "gpt-4o", "gpt-4o"}, keys, "budget above: %v", withBudget)
	}
}

// One deployment failing opens its own circuit; the resource's other
// deployments keep serving.
func TestBreakerOpensOneDeploymentsCircuit(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		if strings.Contains(r.URL.Path, "/sick/") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 2})
	require.NoError(t, err)
	c := clientFor(t, b)
	post := func(deployment string) (*http.Response, error) {
		return c.Post(srv.URL+"/openai/deployments/"+deployment+"/chat/completions?api-version=2024-10-21", "application/json",
			strings.NewReader(`{"max_tokens":1,"messages":[]}`))
	}
	for range 2 {
		resp, err := post("sick")
		require.NoError(t, err)
		resp.Body.Close()
	}
	_, err = post("sick")
	require.ErrorIs(t, err, ErrCircuitOpen)
	resp, err := post("well")
	require.NoError(t, err, "the other deployment's circuit is closed")
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
