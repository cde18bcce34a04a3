package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: a second SIGINT or SIGTERM during --shutdown-grace was
// swallowed, so that an operator's second Ctrl-C (or a supervisor's
// second TERM) waited out the whole grace, 30 s by default, as the first
// did. It now cuts what remains at once, and the proxy still exits only
// once the spend of each attempt it sent is settled.
func TestASecondSIGTERMCutsTheGraceAndTheCutStreamIsStillCharged(t *testing.T) {
	t.Run("in memory", func(t *testing.T) { secondSIGTERM(t) })
	t.Run("in Redis", func(t *testing.T) { secondSIGTERM(t, "--redis", startRedisServer(t, "--appendonly", "yes")) })
}

func secondSIGTERM(t *testing.T, args ...string) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		select { // a stream that would outlive the grace
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	var errOut lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- proxyCommand(append([]string{"--listen", "127.0.0.1:0", "--upstream", up.URL, "--prices", prices, "--budget", "5",
			"--shutdown-grace", "1h"}, args...), noEnv, &bytes.Buffer{}, &errOut)
	}()
	addr := listeningAddr(t, &errOut)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-v3.2","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, first, "first")

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, time.Millisecond, "the first SIGTERM stops accepting")
	select {
	case code := <-done:
		t.Fatalf("the proxy exited (%d) on the first SIGTERM with a stream in flight and an hour of grace", code)
	case <-time.After(20 * time.Millisecond):
	}

	sent := time.Now()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-done:
		t.Logf("exited %v after the second SIGTERM", time.Since(sent))
		assert.Equal(t, 0, code, errOut.String())
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGTERM did not cut the grace")
	}
	_, err = io.ReadAll(br)
	assert.Error(t, err, "the stream was cut")

	var charged, stopped bool
	for line := range strings.Lines(errOut.String()) {
		var rec struct{ Msg, Spend string }
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		switch rec.Msg {
		case "request":
			assert.False(t, stopped, "the cut stream was settled after the proxy said it stopped")
			charged = rec.Spend != "" && rec.Spend != "$0"
			assert.True(t, charged, "a cut stream is charged what it may have cost: %s", line)
		case "httpguard proxy stopped":
			stopped = true
		}
	}
	assert.True(t, charged, "the cut stream's spend was settled before exit: %s", errOut.String())
	assert.True(t, stopped)
}
