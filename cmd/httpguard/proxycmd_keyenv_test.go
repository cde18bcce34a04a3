package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: an empty --upstream-key-env ("$VAR" with VAR unset) with
// a config file of tenants was refused as "with tenants, key_env must
// name the environment variable holding its real key": a config line the
// file does not have, not the flag at fault.
func TestProxyRefusesAnEmptyUpstreamKeyEnvNamingTheFlag(t *testing.T) {
	config := filepath.Join(t.TempDir(), "tenants.yaml")
	require.NoError(t, os.WriteFile(config, []byte("tenants:\n  - name: a\n    key_sha256: "+strings.Repeat("ab", 32)+"\n"), 0o600))
	var out, errOut bytes.Buffer
	require.Equal(t, 2, proxyCommand([]string{"--config", config, "--upstream-key-env", ""}, noEnv, &out, &errOut))
	assert.Contains(t, errOut.String(), "httpguard proxy: --upstream-key-env must name an environment variable (default HTTPGUARD_UPSTREAM_KEY)")
	assert.NotContains(t, errOut.String(), "key_env must")
}
