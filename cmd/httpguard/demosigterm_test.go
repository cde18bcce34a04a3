package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the demo stopped on SIGINT only. SIGTERM, which timeout(1),
// CI runners cancelling a job and docker stop send, killed it at once:
// a --fleet run on a real Redis (--redis) left its keys there, the
// budget's never to expire, though the demo deletes them "also when the
// run is interrupted".
func TestTheFleetDemoStopsOnSIGTERMAndDeletesItsKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	demoKeys := func() []string {
		var out []string
		for _, k := range mr.Keys() {
			if strings.Contains(k, "httpguard-demo") {
				out = append(out, k)
			}
		}
		return out
	}
	var out, errOut lockedBuffer
	done := make(chan int, 1)
	go func() { done <- demoCommand([]string{"--fleet", "2", "--redis", mr.Addr()}, &out, &errOut) }()
	require.Eventually(t, func() bool { return len(demoKeys()) > 0 }, 30*time.Second, 5*time.Millisecond,
		"the fleet run wrote no keys to Redis")

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-done:
		assert.Equal(t, 1, code, "the run was cut short: %s", errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the demo did not stop on SIGTERM")
	}
	assert.NotContains(t, out.String(), "MODE", "the table of a run cut short")
	assert.Empty(t, demoKeys())
}
