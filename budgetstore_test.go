package httpguard_test

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
)

func TestMemoryBudgetStoreConforms(t *testing.T) {
	storetest.BudgetStore(t, func(*testing.T) httpguard.BudgetStore { return httpguard.NewMemoryBudgetStore() })
}
