package main

import (
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Was a data race (go test -race): go-redis reads its process-wide logger
// without a lock from its pools' goroutines, and the proxy replaced that
// logger at start, while a client made before it in the same process (the
// fleet demo's, in the tests) could be logging a failed dial.
func TestProxyDoesNotRaceRedisClientsAlreadyLogging(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String() // nothing listens here once closed
	ln.Close()
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()

	// A client with an idle connection to keep dials, at once, in a
	// goroutine of its pool, which logs its failure.
	other := redis.NewClient(&redis.Options{Addr: dead, MinIdleConns: 1, DialerRetries: 1})
	defer other.Close()

	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", addr, "--redis", dead}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}, 10*time.Second, 5*time.Millisecond)
	stopBySIGTERM(t, done, &errOut)
}
