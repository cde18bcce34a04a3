package httpguard_test

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
)

func TestMemoryLimitStorePassesTheConformanceSuite(t *testing.T) {
	storetest.LimitStore(t, func(*testing.T) httpguard.LimitStore { return httpguard.NewMemoryLimitStore() })
}

// A Limiter's own store takes turns and corrects tokens without a lock
// while the key's state is at hand: the suite checks that path too.
func TestMemoryLimitStorePassesTheConformanceSuiteWithoutItsLock(t *testing.T) {
	storetest.LimitStore(t, func(*testing.T) httpguard.LimitStore { return httpguard.NewHintedLimitStore() })
}
