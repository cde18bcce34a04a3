package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: the README asks for a Redis with appendonly yes and
// maxmemory-policy noeviction, and the proxy warned of the first only: a
// Redis with a memory limit and an eviction policy (a managed Redis's
// default, volatile-lru, evicts keys that expire, as a budget window's
// do) may drop the budgets' keys when full, forgetting what they spent,
// and the proxy said nothing at start.
func TestProxyWarnsOfABudgetInARedisThatEvictsKeys(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	const warning = "Redis may evict keys when full"
	for _, tc := range []struct {
		name  string
		redis []string
		warns bool
	}{
		{"a limit, volatile-lru", []string{"--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru"}, true},
		{"a limit, noeviction", []string{"--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "noeviction"}, false},
		{"no limit", []string{"--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startRedisServer(t, tc.redis...)
			var errOut lockedBuffer
			done := make(chan int)
			go func() {
				done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", addr, "--prices", prices, "--budget", "5"}, noEnv, &bytes.Buffer{}, &errOut)
			}()
			listen := listeningAddr(t, &errOut)
			client := &http.Client{Transport: &http.Transport{}}
			waitServing(t, client, listen)
			client.CloseIdleConnections()
			stopBySIGTERM(t, done, &errOut)
			if tc.warns {
				assert.Contains(t, errOut.String(), warning)
				assert.Contains(t, errOut.String(), `"policy":"volatile-lru"`)
			} else {
				assert.NotContains(t, errOut.String(), warning)
			}
		})
	}
}
