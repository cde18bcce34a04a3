package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: a Redis whose certificate the proxy does not trust
// (rediss:// to a server with a self-signed one) was taken for a Redis not
// up yet, as a refused password had been:
// the proxy started, logged "no answer from Redis yet", and refused every
// budgeted request (503 store_unavailable) for as long as it ran, which
// waiting mends no more than a wrong password.
func TestProxyRefusesToStartOnARedisWhoseCertificateItDoesNotTrust(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	untrusted := httptest.NewTLSServer(http.NotFoundHandler()) // a certificate no system trusts
	defer untrusted.Close()
	for _, tc := range []struct{ redis, says string }{
		{"rediss://:pw-SECRET-1@" + strings.TrimPrefix(untrusted.URL, "https://"), "certificate"},
	} {
		var errOut lockedBuffer
		done := make(chan int)
		go func() {
			done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", tc.redis, "--prices", prices, "--budget", "5"}, noEnv, &bytes.Buffer{}, &errOut)
		}()
		select {
		case code := <-done:
			assert.Equal(t, 2, code, errOut.String())
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the proxy started on a Redis whose certificate it does not trust", tc.redis)
			stopBySIGTERM(t, done, &errOut)
		}
		assert.Contains(t, errOut.String(), "httpguard proxy: --redis: the TLS connection to Redis at ", tc.redis)
		assert.Contains(t, errOut.String(), tc.says, tc.redis)
		assert.NotContains(t, errOut.String(), "SECRET")
	}
}
