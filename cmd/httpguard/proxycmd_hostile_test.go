package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a review): a --redis URL that redis.ParseURL
// refuses (a password with a bare %, a bad port) is printed whole on
// stderr, password included: url.Parse quotes the URL it refuses. The
// command takes care to log only the address once Redis is dialled ("a
// URL may hold a password"), but not on this path.
func TestABadRedisURLDoesNotPrintItsPassword(t *testing.T) {
	for _, u := range []string{"redis://:pa%ss-secret-1@127.0.0.1:6379", "redis://:pass-secret-1@127.0.0.1:bad"} {
		var out, errOut bytes.Buffer
		code := proxyCommand([]string{"--redis", u}, noEnv, &out, &errOut)
		require.Equal(t, 2, code, errOut.String())
		assert.NotContains(t, errOut.String(), "secret-1")
	}
}
