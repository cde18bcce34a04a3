package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: a config whose upstream headers hold a gateway's key
// (x-portkey-api-key) and no tenants started on any address, spending
// that key for whoever reached it, as fallbacks without tenants would (an
// error). It is now an error on an address other than loopback, and a
// warning on loopback, where only local processes reach the sidecar.
func TestProxyRefusesAnUnguardedCredentialOffLoopback(t *testing.T) {
	const gatewayKey = "pk-operator-0123456789abcdef"
	config := filepath.Join(t.TempDir(), "portkey.yaml")
	require.NoError(t, os.WriteFile(config, []byte("upstreams:\n  - prefix: /v1\n    url: http://127.0.0.1:1/v1\n"+
		"    headers: {x-portkey-api-key: "+gatewayKey+", x-portkey-provider: openai}\n"), 0o600))
	for _, listen := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		var out, errOut bytes.Buffer
		code := proxyCommand([]string{"--config", config, "--listen", listen}, noEnv, &out, &errOut)
		assert.Equal(t, 2, code, listen)
		assert.Contains(t, errOut.String(), "the headers of upstream /v1 hold a credential (a gateway's key) and there are no tenants: anyone who reaches --listen "+listen+" would spend on it", listen)
		assert.NotContains(t, errOut.String(), gatewayKey)
	}

	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	for _, listen := range []string{freeAddr(t), "localhost:" + port} {
		var errOut lockedBuffer
		done := make(chan int)
		go func() {
			done <- proxyCommand([]string{"--config", config, "--listen", listen}, noEnv, &bytes.Buffer{}, &errOut)
		}()
		client := &http.Client{Transport: &http.Transport{}}
		waitServing(t, client, listen)
		client.CloseIdleConnections()
		stopBySIGTERM(t, done, &errOut)
		assert.Contains(t, errOut.String(), "any client that reaches the proxy spends on it", "a warning on loopback")
		assert.NotContains(t, errOut.String(), gatewayKey)
	}
}

func TestLoopbackTellsLocalAddressesFromTheOthers(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8787": true, "127.0.0.2:1": true, "[::1]:8787": true, "localhost:8787": true, "LOCALHOST:1": true,
		":8787": false, "0.0.0.0:8787": false, "[::]:8787": false, "10.0.0.1:8787": false, "proxy.internal:8787": false, "127.0.0.1": false} {
		assert.Equal(t, want, loopback(addr), addr)
	}
}
