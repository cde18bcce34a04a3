package main

import (
	"bytes"
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
	// A client with an idle connection to keep dials, at once, in a
	// goroutine of its pool, which logs its failure.
	other := redis.NewClient(&redis.Options{Addr: deadAddr, MinIdleConns: 1, DialerRetries: 1})
	defer other.Close()

	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", deadAddr}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	addr := listeningAddr(t, &errOut)
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
