package main

import (
	"bytes"
	"context"
	"io"
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

// Was a bug: a Redis URL written without its redis:// (user:password@host:
// port) was taken for an address, and printed whole, password included,
// by the proxy's "no answer from Redis yet" and the fleet demo's "no
// answer from" (and by go-redis's own dial errors), where the code meant
// to print the address only.
func TestARedisURLWithoutItsSchemeDoesNotPrintItsPassword(t *testing.T) {
	const addr = "default:secretpw-1@127.0.0.1:1"
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--redis", addr, "--listen", "127.0.0.1:-1"}, nil},
		{[]string{"--listen", "127.0.0.1:-1"}, map[string]string{"HTTPGUARD_REDIS": addr}},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(tc.args, func(k string) string { return tc.env[k] }, &out, &errOut)
		assert.Equal(t, 2, code, errOut.String())
		assert.Contains(t, errOut.String(), "--redis: not host:port")
		assert.NotContains(t, errOut.String(), "secretpw")
	}
	_, err := fleetDemo(context.Background(), io.Discard, 2, addr)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secretpw")
	for _, ok := range []string{"127.0.0.1:6379", "localhost:6379", "[::1]:6379", "redis://:pw@127.0.0.1:6379/0"} {
		_, err := redisOptions(ok)
		assert.NoError(t, err, ok)
	}
}

// Was a bug: a Redis URL that url.Parse refuses because its password holds
// a /, ? or # unescaped (which end the URL's authority there) had the error
// printed as url.Parse wrote it, the password's start quoted as the host's
// port (invalid port ":s3cretpass" after host), although the code meant to
// print no part of the URL.
func TestARedisURLThatDoesNotParseDoesNotPrintItsPassword(t *testing.T) {
	for _, addr := range []string{"redis://:s3cretpass/word@127.0.0.1:6379", "redis://user:s3cretpass#x@127.0.0.1:6379/0", "rediss://user:s3cretpass?x@h:6379"} {
		var out, errOut bytes.Buffer
		code := proxyCommand([]string{"--redis", addr, "--listen", "127.0.0.1:-1"}, func(string) string { return "" }, &out, &errOut)
		assert.Equal(t, 2, code, errOut.String())
		assert.Contains(t, errOut.String(), "--redis: not a Redis URL", addr)
		assert.NotContains(t, errOut.String(), "s3cretpass", addr)
		_, err := fleetDemo(context.Background(), io.Discard, 2, addr)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "s3cretpass", addr)
	}
}

// Was a bug: a Redis URL whose password starts with digits and holds a /
// or ? (redis://user:1234/s3cret@host:6379) parses, its authority ending
// at the / as host "user" and port 1234, and go-redis refused what
// followed, quoting it: the rest of the password was printed as the
// database number, the path or an option's name ("redis: invalid database
// number: \"s3cret@127.0.0.1:6379\""); with a # it was taken, the
// rest ignored, and the dial of host "user", port 1234, printed the
// password's start.
func TestARedisURLThatGoRedisRefusesDoesNotPrintItsPassword(t *testing.T) {
	for _, addr := range []string{"redis://user:1234/s3cretpass@127.0.0.1:6379", "redis://:1234/s3cretpass@127.0.0.1:6379/0", "redis://user:1234?s3cretpass@h:6379", "redis://user:1234?s3cretpass=1@h:6379", "redis://user:1234#s3cretpass@h:6379"} {
		var out, errOut bytes.Buffer
		code := proxyCommand([]string{"--redis", addr, "--listen", "127.0.0.1:-1"}, func(string) string { return "" }, &out, &errOut)
		assert.Equal(t, 2, code, errOut.String())
		assert.Contains(t, errOut.String(), "--redis: not a Redis URL", addr)
		assert.NotContains(t, errOut.String(), "s3cretpass", addr)
		_, err := fleetDemo(context.Background(), io.Discard, 2, addr)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "s3cretpass", addr)
	}
}
