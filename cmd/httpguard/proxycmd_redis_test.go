package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startRedisServer runs a redis-server of the test's own on loopback with
// args, until the test ends, and returns its address.
func startRedisServer(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "this test needs redis-server (apt-get install redis-server)")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--dir", t.TempDir()}, args...)...)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	require.Eventually(t, func() bool {
		err := c.Ping(context.Background()).Err()
		return err == nil || refusedBy(err) // one with a password answers NOAUTH
	}, 10*time.Second, 5*time.Millisecond)
	return addr
}

// Was a bug: a Redis that refuses the proxy (no password or a wrong one,
// a database it does not have) was taken for one not up yet: the proxy
// started, logged "no answer from Redis yet", and never became ready,
// every budgeted request refused and each proxy's limiters pacing it
// alone on the whole rate. It is now an error at start, naming Redis's
// refusal, never the password.
func TestProxyRefusesToStartOnARedisThatRefusesIt(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	addr := startRedisServer(t, "--requirepass", "right-pw-SECRET-1")
	for _, tc := range []struct{ redis, says string }{
		{addr, "NOAUTH"},
		{"redis://:wrong-pw-SECRET-2@" + addr, "WRONGPASS"},
		{"redis://:right-pw-SECRET-1@" + addr + "/99", "ERR DB index is out of range"},
	} {
		var errOut lockedBuffer
		done := make(chan int)
		go func() {
			done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", tc.redis, "--prices", prices, "--budget", "5"}, noEnv, &bytes.Buffer{}, &errOut)
		}()
		select {
		case code := <-done:
			assert.Equal(t, 2, code, errOut.String())
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the proxy started on a Redis that refuses it", tc.says)
			stopBySIGTERM(t, done, &errOut)
		}
		assert.Contains(t, errOut.String(), "httpguard proxy: --redis: Redis at "+addr+" refuses the proxy ("+tc.says)
		assert.NotContains(t, errOut.String(), "SECRET")
	}

	// The right password starts it.
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", "redis://:right-pw-SECRET-1@" + addr, "--prices", prices, "--budget", "5"},
			noEnv, &bytes.Buffer{}, &errOut)
	}()
	listen := listeningAddr(t, &errOut)
	client := &http.Client{Transport: &http.Transport{}}
	waitServing(t, client, listen)
	resp, err := client.Get("http://" + listen + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	client.CloseIdleConnections()
	stopBySIGTERM(t, done, &errOut)
	assert.NotContains(t, errOut.String(), "SECRET")
}

// A budget in a Redis that keeps no append-only file is forgotten when
// Redis restarts (see the fleet tests of internal/proxy): the proxy said
// nothing of it. It now warns at start, when a budget applies.
func TestProxyWarnsOfABudgetInARedisWithoutAnAppendOnlyFile(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	const warning = "Redis keeps no append-only file: restarted, it forgets what the budgets spent"
	for _, tc := range []struct {
		name  string
		redis []string
		args  []string
		warns bool
	}{
		{"no AOF, a budget", []string{"--appendonly", "no"}, []string{"--prices", prices, "--budget", "5"}, true},
		{"AOF, a budget", []string{"--appendonly", "yes"}, []string{"--prices", prices, "--budget", "5"}, false},
		{"no AOF, no budget", []string{"--appendonly", "no"}, []string{"--rps", "5"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startRedisServer(t, tc.redis...)
			var errOut lockedBuffer
			done := make(chan int)
			go func() {
				done <- proxyCommand(append([]string{"--listen", "127.0.0.1:0", "--redis", addr}, tc.args...), noEnv, &bytes.Buffer{}, &errOut)
			}()
			listen := listeningAddr(t, &errOut)
			client := &http.Client{Transport: &http.Transport{}}
			waitServing(t, client, listen)
			client.CloseIdleConnections()
			stopBySIGTERM(t, done, &errOut)
			if tc.warns {
				assert.Contains(t, errOut.String(), warning)
			} else {
				assert.NotContains(t, errOut.String(), warning)
			}
		})
	}
}
