package proxy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nodeDir holds the Node test: its package.json pins the openai client.
const nodeDir = "testdata/node"

// TestNodeOpenAIClient drives the proxy with the official Node openai
// client, changed only by its base URL. It needs node (CI has it) and the
// client installed by `npm ci` in testdata/node, which .ci/run does; when
// node_modules is missing the test runs npm ci itself. It never skips.
func TestNodeOpenAIClient(t *testing.T) {
	node, err := exec.LookPath("node")
	require.NoError(t, err, "the Node client test needs node on PATH (CI installs it)")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "openai")); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		npm := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		npm.Dir = nodeDir
		npm.WaitDelay = 5 * time.Second
		out, err := npm.CombinedOutput()
		require.NoError(t, err, "npm ci in %s:\n%s", nodeDir, out)
	}

	srv := faultServer(t, httpguardtest.Config{})
	require.NoError(t, srv.Enqueue(httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset()))
	c := tenantsConfig(t, srv)
	c.Tenants = append(c.Tenants, Tenant{Name: "tiny", KeySHA256: keyHash("vk-tiny"), Budget: &BudgetSpec{Limit: httpguard.Nanodollar}})
	r := start(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := runNode(ctx, node, nodeDir, "openai.test.mjs", "PROXY_URL="+r.URL, "CHAT_KEY=vk-chat", "TINY_KEY=vk-tiny", "NO_COLOR=1")
	t.Logf("node openai.test.mjs:\n%s", out)
	require.NoError(t, err)

	tiny := 0
	for _, rec := range r.accessLog(t) {
		if rec["tenant"] == "tiny" {
			tiny++
		}
	}
	assert.Equal(t, 1, tiny, "the SDK did not retry the budget's refusal")
	st := srv.Stats()
	assert.Equal(t, int64(1), st.Status[503], "the scripted 503 reached the proxy, which retried it")
	assert.Equal(t, int64(1), st.Resets, "and the reset")

	// The stream tests' upstream requests: the proxy asked for the usage
	// chunk of the one whose client did not (and stripped it on the way
	// back, which the Node test checks).
	streams := 0
	for _, req := range srv.Requests() {
		var body struct {
			Stream        bool `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if json.Unmarshal(req.Body, &body) != nil || !body.Stream {
			continue
		}
		streams++
		assert.True(t, body.StreamOptions.IncludeUsage, "the proxy asks for the usage chunk: %s", req.Body)
	}
	assert.Equal(t, 2, streams, "the two stream tests' requests reached the server")
}

// runNode runs file, a node:test file in dir, with env added to the
// environment, and returns what it printed. It runs the file in one node
// process, not under `node --test`, whose runner runs each file in a child
// process that the end of ctx would not kill: a test hung on the proxy
// would go on running, and holding its connections, past the Go test.
// WaitDelay bounds the wait for output should anything the file starts
// hold node's stdout.
func runNode(ctx context.Context, node, dir, file string, env ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, node, "--test-reporter=spec", file)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}
