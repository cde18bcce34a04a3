package proxy

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// Was a gap: Redis holds the budgets and the limiters' buckets, and a
// proxy given --redis without either (no --budget, --rps or --tpm, no
// tenant's budget or limits) started with "redis": true in its banner and
// kept nothing there: an operator who meant a fleet to share its caps and
// rates was told nothing of having set none.
func TestARedisWithNothingToHoldIsNamedAsUnused(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { client.Close() })
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Redis: client})
	assert.Contains(t, r.logs.String(), "Redis holds budgets and rate limits, and there are none: it is not used")

	for _, c := range []Config{
		{Upstreams: upstreams(t, srv), Redis: client, Limits: LimitSpec{RPS: 5}},
		{Upstreams: upstreams(t, srv), Redis: client, Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}},
		{Upstreams: upstreams(t, srv), Redis: client, Getenv: realKeys, Tenants: []Tenant{{Name: "a", KeySHA256: keyHash("vk-a"), Limits: LimitSpec{TPM: 100000}}}},
	} {
		used := start(t, c)
		assert.NotContains(t, used.logs.String(), "it is not used")
	}
}
