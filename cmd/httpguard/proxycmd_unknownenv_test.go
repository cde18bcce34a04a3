package main

import (
	"bytes"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: every flag is also read from HTTPGUARD_<NAME>, and a
// variable of that form naming no flag was ignored without a word: a
// typo (HTTPGUARD_BUDGT=20, no cap at all) or another tool's spelling
// (HTTPGUARD_REDIS_URL, which left each proxy of a fleet its own budgets,
// each spending the whole cap), where the config file refuses an unknown
// field. The proxy now names such variables in a warning at start (never
// their values), but not the key variables its configuration names.
func TestProxyNamesTheVariablesThatReadAsSettingsButAreNone(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	defer srv.Close()
	t.Setenv("HTTPGUARD_REDIS_URL", "redis://:pw-secret-1@127.0.0.1:1")
	t.Setenv("HTTPGUARD_BUDGT", "20")
	t.Setenv("HTTPGUARD_UPSTREAM_KEY", "sk-secret-2") // --upstream-key-env's
	t.Setenv("HTTPGUARD_KEY", "sk-secret-3")          // the README's clients'
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--upstream", srv.BaseURL()}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	listeningAddr(t, &errOut)
	stopBySIGTERM(t, done, &errOut)
	logs := errOut.String()
	assert.Contains(t, logs, `is no setting of httpguard proxy, nor a key variable of its configuration: ignored","variable":"HTTPGUARD_BUDGT"`)
	assert.Contains(t, logs, `"variable":"HTTPGUARD_REDIS_URL"`)
	assert.NotContains(t, logs, `"variable":"HTTPGUARD_UPSTREAM_KEY"`)
	assert.NotContains(t, logs, `"variable":"HTTPGUARD_KEY"`)
	assert.NotContains(t, logs, "secret")
}
