package redisguard

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChild(cfg)) // a process of the fleet tests, not a test run
	}
	goleak.VerifyTestMain(m)
}
