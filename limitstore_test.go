package httpguard_test

import (
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest/storetest"
)

func TestMemoryLimitStorePassesTheConformanceSuite(t *testing.T) {
	storetest.LimitStore(t, func(*testing.T) httpguard.LimitStore { return httpguard.NewMemoryLimitStore() })
}
