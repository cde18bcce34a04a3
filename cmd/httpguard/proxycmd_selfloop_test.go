package main

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: an upstream that is the proxy's own --listen address (a port
// typed twice, --listen 127.0.0.1:8787 --upstream
// http://localhost:8787/v1) was taken, and each request came back to the
// proxy, which sent it on to itself again: one request through such a
// proxy opened connections until the process ran out of file descriptors
// (measured: "accept4: too many open files" within 3 seconds, 10,554
// requests logged for one sent), refusing every other client meanwhile.
// It is now an error at start.
func TestProxyRefusesAnUpstreamThatIsItsOwnAddress(t *testing.T) {
	for _, up := range []func(addr string) string{
		func(addr string) string { return "http://" + addr + "/v1" },
		func(addr string) string {
			return "http://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:] + "/v1"
		},
		func(addr string) string { return "http://0.0.0.0:" + addr[strings.LastIndexByte(addr, ':')+1:] + "/v1" },
	} {
		addr := freeAddr(t)
		var errOut lockedBuffer
		done := make(chan int, 1)
		go func() {
			done <- proxyCommand([]string{"--listen", addr, "--upstream", up(addr)}, noEnv, &bytes.Buffer{}, &errOut)
		}()
		select {
		case code := <-done:
			assert.Equal(t, 2, code, errOut.String())
			assert.Contains(t, errOut.String(), "is this proxy's own address", up(addr))
		case <-time.After(5 * time.Second):
			require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
			<-done
			t.Fatalf("%s: the proxy started, sending to itself", up(addr))
		}
	}
}
