package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by an audit of the README against the code): a store
// written as a struct literal, &MemoryBudgetStore{} or
// &MemoryLimitStore{}, was accepted by NewBudget and NewLimiter, and the
// first request through the layer panicked in the caller's goroutine
// ("assignment to entry in nil map", a nil pointer dereference), where a
// layer written so fails each request with an error naming its
// constructor. The constructors now refuse such a store, naming the one
// to call.
func TestAZeroMemoryStoreIsRefusedByTheConstructorNamingItsOwn(t *testing.T) {
	for name, store := range map[string]BudgetStore{
		"zero": &MemoryBudgetStore{},
		"nil":  (*MemoryBudgetStore)(nil),
	} {
		_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Store: store})
		require.Error(t, err, name)
		assert.ErrorContains(t, err, "httpguard: budget: Store: make a MemoryBudgetStore with NewMemoryBudgetStore", name)
	}
	for name, store := range map[string]LimitStore{
		"zero": &MemoryLimitStore{},
		"nil":  (*MemoryLimitStore)(nil),
	} {
		_, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1, Store: store})
		require.Error(t, err, name)
		assert.ErrorContains(t, err, "httpguard: limiter: Store: make a MemoryLimitStore with NewMemoryLimitStore", name)
	}

	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, Store: NewMemoryBudgetStore()})
	assert.NoError(t, err, "a store made by its constructor")
	_, err = NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1, Store: NewMemoryLimitStore()})
	assert.NoError(t, err, "a store made by its constructor")
}
