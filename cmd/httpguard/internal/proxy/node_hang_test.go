//go:build unix

package proxy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: TestNodeOpenAIClient ran `node --test openai.test.mjs`, and
// node's test runner runs each file in a child process of its own. When
// the test's two minutes ran out, exec.CommandContext killed the runner
// only: the child that runs the tests (the openai client and its
// connections to the proxy) went on running, reparented, past the Go
// test, until its own requests gave up (the client's default timeout is
// ten minutes, retried). runNode runs the file in one process, which the
// context's end kills.
func TestRunNodeLeavesNoProcessBehindWhenItsTimeRunsOut(t *testing.T) {
	node, err := exec.LookPath("node")
	require.NoError(t, err, "the Node client test needs node on PATH (CI installs it)")
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hang.test.mjs"), []byte(`import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
test('hangs', async () => {
  writeFileSync(process.env.PID_FILE, String(process.pid));
  await new Promise((resolve) => setTimeout(resolve, 60000));
});
`), 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = runNode(ctx, node, dir, "hang.test.mjs", "PID_FILE="+pidFile)
	require.Error(t, err, "killed as its time ran out")
	assert.Less(t, time.Since(start), 30*time.Second, "runNode returns once its time is out")

	b, err := os.ReadFile(pidFile)
	require.NoError(t, err, "the test file ran")
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	if syscall.Kill(pid, 0) == nil {
		syscall.Kill(pid, syscall.SIGKILL) // this test's own process
		t.Errorf("the node process running the tests (pid %d) outlived runNode", pid)
	}
}
