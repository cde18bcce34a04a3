package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: the check for an upstream that is the proxy's own
// address took any loopback address on the proxy's port for its own
// where the proxy listens on one loopback address: with --listen
// 127.0.0.1:PORT, an upstream at http://[::1]:PORT/v1 or
// http://127.0.0.2:PORT/v1, another server's socket (a Node.js server
// listening on localhost binds ::1), was refused as "this proxy's own
// address" and the proxy did not start. A loopback or unspecified host
// is the proxy's own only where the proxy listens on that address, or on
// every address of its family.
func TestProxyServesAnUpstreamOnAnotherLoopbackAddressAtItsPort(t *testing.T) {
	for _, c := range []struct{ upstream, listen string }{
		{"127.0.0.2", "127.0.0.1"},
		{"::1", "127.0.0.1"},
		{"127.0.0.1", "::1"},
	} {
		t.Run(c.upstream+" beside "+c.listen, func(t *testing.T) {
			srv, err := httpguardtest.NewServer(httpguardtest.Config{})
			require.NoError(t, err)
			defer srv.Close()
			ln, err := net.Listen("tcp", net.JoinHostPort(c.upstream, "0"))
			if err != nil {
				t.Skipf("no %s here: %v", c.upstream, err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			own, err := net.Listen("tcp", net.JoinHostPort(c.listen, port))
			if err != nil {
				ln.Close()
				t.Skipf("%s:%s is taken: %v", c.listen, port, err)
			}
			own.Close() // free for the proxy
			target, err := url.Parse(srv.URL)
			require.NoError(t, err)
			// The fault server's answers, from another socket at the port.
			up := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
			up.Listener.Close()
			up.Listener = ln
			up.Start()
			defer up.Close()

			listen := net.JoinHostPort(c.listen, port)
			var errOut lockedBuffer
			done := make(chan int, 1)
			go func() {
				done <- proxyCommand([]string{"--listen", listen, "--upstream", up.URL + "/v1"}, noEnv, &bytes.Buffer{}, &errOut)
			}()
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errOut.String(), "httpguard proxy listening"); {
				select {
				case code := <-done:
					t.Fatalf("the proxy did not start: exit %d: %s", code, errOut.String())
				case <-time.After(5 * time.Millisecond):
				}
				require.True(t, time.Now().Before(deadline), "the proxy logs where it listens")
			}
			addr := listeningAddr(t, &errOut)
			require.Equal(t, port, addr[strings.LastIndexByte(addr, ':')+1:])
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			waitServing(t, client, addr)
			resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(string(requestBody)))
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, int64(1), srv.Stats().Status[http.StatusOK], "the upstream beside it answered")
			stopBySIGTERM(t, done, &errOut)
		})
	}
}

// What reaches a listener, and what is another socket at its port.
func TestWhichHostsReachTheProxysListener(t *testing.T) {
	for _, c := range []struct {
		host, listen string
		reaches      bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"localhost", "127.0.0.1", true},
		{"LOCALHOST", "::1", true},
		{"0.0.0.0", "127.0.0.1", true},
		{"::", "::1", true},
		{"::ffff:127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1", "0.0.0.0", true},
		{"127.0.0.2", "0.0.0.0", true},
		{"::1", "::", true},
		{"127.0.0.1", "::", true},
		{"localhost", "::", true},
		{"10.0.0.5", "10.0.0.5", true},
		{"127.0.0.2", "127.0.0.1", false},
		{"::1", "127.0.0.1", false},
		{"127.0.0.1", "::1", false},
		{"::", "0.0.0.0", false},
		{"::1", "0.0.0.0", false},
		{"localhost", "127.0.0.2", false},
		{"localhost", "10.0.0.5", false},
		{"10.0.0.6", "::", false},
		{"api.holysheep.ai", "::", false},
	} {
		assert.Equal(t, c.reaches, reaches(c.host, net.ParseIP(c.listen)), "%s at a listener on %s", c.host, c.listen)
	}
}
