package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: a config file's upstreams replace --upstream, and setting
// both is an error; but --upstream-key-env (or HTTPGUARD_UPSTREAM_KEY_ENV),
// which names --upstream's key only, was ignored without a word beside
// them, each upstream's key coming from its key_env.
func TestProxyRefusesUpstreamKeyEnvBesideTheConfigFilesUpstreams(t *testing.T) {
	config := filepath.Join(t.TempDir(), "proxy.yaml")
	require.NoError(t, os.WriteFile(config, []byte("upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n    key_env: HOLYSHEEP_API_KEY\n"), 0o600))
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--config", config, "--upstream-key-env", "OPENAI_KEY"}, nil},
		{[]string{"--config", config}, map[string]string{"HTTPGUARD_UPSTREAM_KEY_ENV": "OPENAI_KEY"}},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(append([]string{"--listen", "nowhere"}, tc.args...), func(k string) string { return tc.env[k] }, &out, &errOut)
		assert.Equal(t, 2, code, "%v %v", tc.args, tc.env)
		assert.Contains(t, errOut.String(), "--upstream-key-env names the key of --upstream, which the upstreams of "+config+" replace", "%v %v", tc.args, tc.env)
	}
}
