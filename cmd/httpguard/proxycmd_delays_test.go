package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Was a stumble: with --max-retries 0 a negative --base-delay passed the
// command's checks (they want it above 0 only when retrying) and was
// refused by the Retrier in its own words, "httpguard: retry: BaseDelay
// must not be negative", naming no flag; so was a negative --max-delay at
// or above it.
func TestProxyRefusesNegativeDelaysNamingTheFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--max-retries", "0", "--base-delay", "-1s", "--max-delay", "1s"},
		{"--max-retries", "0", "--base-delay", "-2s", "--max-delay", "-1s"},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(append([]string{"--listen", "nowhere"}, args...), noEnv, &out, &errOut)
		assert.Equal(t, 2, code, "%v", args)
		assert.Contains(t, errOut.String(), "httpguard proxy: --base-delay and --max-delay must be >= 0", "%v", args)
		assert.NotContains(t, errOut.String(), "BaseDelay", "%v", args)
	}
	_, err := parseProxyFlags([]string{"--max-retries", "0", "--base-delay", "0s"}, noEnv)
	assert.NoError(t, err, "no retries: a delay of 0 is no mistake")
}
