package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Was a stumble: a --redis address whose port no TCP connection can have
// (a trailing space, "127.0.0.1:6379 " from an env file, or a digit too
// many) passed the check for host:port and was taken for a Redis not up
// yet: the proxy started, logged "no answer from Redis yet", and refused
// every budgeted request (503 store_unavailable) and answered /readyz 503
// for as long as it ran, go-redis logging "unknown port" or "invalid
// port" three times a second. It is now an error at start, as a Redis
// that refuses the proxy is.
func TestProxyRefusesARedisAddressWithoutAValidPort(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6379 ", "127.0.0.1:1163790", "redis://:pw-secret-1@127.0.0.1:99999/0", "127.0.0.1:0"} {
		var out, errOut bytes.Buffer
		code := proxyCommand([]string{"--redis", addr, "--listen", "127.0.0.1:-1"}, noEnv, &out, &errOut)
		assert.Equal(t, 2, code, "%q: %s", addr, errOut.String())
		assert.Contains(t, errOut.String(), "--redis: the port must be a number from 1 to 65535", addr)
		assert.NotContains(t, errOut.String(), "secret", addr)
	}
	for _, ok := range []string{"127.0.0.1:6379", "[::1]:1", "localhost:65535", "redis://127.0.0.1:6379/0", "redis://127.0.0.1/0", "unix:///run/redis.sock"} {
		_, err := redisOptions(ok)
		assert.NoError(t, err, ok)
	}
}
