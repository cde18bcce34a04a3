package proxy

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
)

// Was a gap: prices (--prices, the config file's prices and tool_prices,
// tool_call_reserve and tool_result_reserve) are read by budgets only,
// and a proxy given them without --budget or a tenant's budget started
// without a word: no spend was counted (none in the access log or the
// metrics), whatever the operator who priced the models expected.
func TestPricesWithoutABudgetAreNamedAsUnread(t *testing.T) {
	srv := faultServer(t, httpguardtest.Config{})
	r := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices})
	assert.Contains(t, r.logs.String(), "prices are read by budgets only")

	tools := start(t, Config{Upstreams: upstreams(t, srv), ToolPrices: map[string]httpguard.Money{"web_search": httpguard.Cent}})
	assert.Contains(t, tools.logs.String(), "prices are read by budgets only")

	budgeted := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	assert.NotContains(t, budgeted.logs.String(), "read by budgets only")

	tenants := start(t, Config{Upstreams: upstreams(t, srv), Prices: testPrices, Getenv: realKeys,
		Tenants: []Tenant{{Name: "a", KeySHA256: keyHash("vk-a"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	assert.NotContains(t, tenants.logs.String(), "read by budgets only")
}
