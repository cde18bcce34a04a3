package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: net/http's Transport writes some lines of its own to the
// process's standard logger, such as what an upstream sent past the end of
// its answer ("Unsolicited response received on idle HTTP channel
// starting with …", quoting those bytes): they reached stderr as plain
// text, among the JSON records, and unmasked, where the README promises
// that net/http's own lines are warning records of the proxy's log with
// its real keys masked.
func TestProxyLogsTheTransportsOwnLinesInItsJSONLog(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		body := `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`
		// A Content-Length shorter than what follows it.
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s and more", len(body), body)
		buf.Flush()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, conn) // until the proxy's transport closes the connection
	}))
	defer up.Close()
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--upstream", up.URL + "/v1"}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	addr := listeningAddr(t, &errOut)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	waitServing(t, client, addr)
	resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(string(requestBody)))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Eventually(t, func() bool { return strings.Contains(errOut.String(), "Unsolicited response") }, 5*time.Second, time.Millisecond,
		"the transport's line reaches the proxy's log")
	stopBySIGTERM(t, done, &errOut)
	for _, line := range strings.Split(strings.TrimSpace(errOut.String()), "\n") {
		assert.True(t, json.Valid([]byte(line)), "not a JSON record: %s", line)
	}
}
