package httpguard_test

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
)

func TestMemoryBudgetStoreConforms(t *testing.T) {
	storetest.BudgetStore(t, func(*testing.T) httpguard.BudgetStore { return httpguard.NewMemoryBudgetStore() })
}

// A Budget's own store holds its reservations without a lease by amount
// alone, without a lock unless the window moves: the suite checks that
// path too.
func TestMemoryBudgetStoreConformsWithoutLeases(t *testing.T) {
	storetest.BudgetStore(t, func(*testing.T) httpguard.BudgetStore { return httpguard.NewUnleasedBudgetStore() })
}
