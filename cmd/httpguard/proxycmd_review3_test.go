package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard/cmd/httpguard/internal/proxy"
	"github.com/stretchr/testify/require"
)

// --shutdown-grace 0s is accepted (the flag must be >= 0) and its help
// says it is how long streams in flight may finish; it reached the proxy
// as Config's zero, which means the 30s default: an operator asking for
// no grace waited 30s on every stream in flight.
func TestAShutdownGraceOfZeroWaitsForNothing(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	s, err := parseProxyFlags([]string{"--upstream", up.URL + "/v1", "--shutdown-grace", "0s"}, noEnv)
	require.NoError(t, err)
	c, err := s.proxyConfig(noEnv)
	require.NoError(t, err)
	p, err := proxy.New(c)
	require.NoError(t, err)
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	_, err = bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)

	stop()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		release <- struct{}{}
		<-served
		t.Fatal("with --shutdown-grace 0s, Serve still waited for the stream in flight")
	}
}
