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

// Was a bug: a key pasted in place of its variable's name (key_env:
// sk-proj-…, --upstream-key-env sk-…) was printed whole on stderr, in
// "the environment variable sk-proj-… (key_env) is empty or unset". The
// name is shown only when it reads as a variable's name.
func TestAKeyPastedAsKeyEnvIsNotPrinted(t *testing.T) {
	dir := t.TempDir()
	tenants := "tenants:\n  - name: a\n    key_sha256: " + strings.Repeat("ab", 32) + "\n"
	upstream := filepath.Join(dir, "upstream.yaml")
	require.NoError(t, os.WriteFile(upstream, []byte("upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n"+
		"    key_env: sk-proj-Secret1abc\n"+tenants), 0o600))
	fallback := filepath.Join(dir, "fallback.yaml")
	require.NoError(t, os.WriteFile(fallback, []byte("upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n"+
		"    key_env: HOLYSHEEP_API_KEY\n    fallbacks:\n      - base_url: https://api.openai.com/v1\n"+
		"        key_env: AIzaSyD0Secret2abc\n"+tenants), 0o600))
	onlyTenants := filepath.Join(dir, "tenants.yaml")
	require.NoError(t, os.WriteFile(onlyTenants, []byte(tenants), 0o600))
	env := map[string]string{"HOLYSHEEP_API_KEY": "sk-hs"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--config", upstream}, nil},
		{[]string{"--config", fallback}, env},
		{[]string{"--config", onlyTenants, "--upstream-key-env", "sk-proj-Secret3abc"}, nil},
		{[]string{"--config", onlyTenants}, map[string]string{"HTTPGUARD_UPSTREAM_KEY_ENV": "sk-proj-Secret4abc"}},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(tc.args, func(k string) string { return tc.env[k] }, &out, &errOut)
		require.Equal(t, 2, code, errOut.String())
		assert.Contains(t, errOut.String(), "is empty or unset", tc.args)
		assert.NotContains(t, errOut.String(), "Secret", tc.args)
	}
	// A variable's name is still named.
	var out, errOut bytes.Buffer
	require.Equal(t, 2, proxyCommand([]string{"--config", onlyTenants}, noEnv, &out, &errOut))
	assert.Contains(t, errOut.String(), "the environment variable HTTPGUARD_UPSTREAM_KEY, holding its real key for the tenants, is empty or unset")
}
