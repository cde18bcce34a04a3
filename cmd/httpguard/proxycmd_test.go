package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/cmd/httpguard/internal/proxy"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func TestProxyHelpListsEveryFlagWithItsDefaultAndVariable(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, proxyCommand([]string{"--help"}, noEnv, &out, &errOut))
	help := out.String()
	for _, f := range proxyFlags {
		assert.Contains(t, help, "--"+f.name+" ")
		assert.Contains(t, help, "env "+envName(f.name))
	}
	for _, s := range []string{"default 127.0.0.1:8787", "default https://api.holysheep.ai/v1", "default 5;", "default 1s;", "default 60s;"} {
		assert.Contains(t, help, s)
	}
	out.Reset()
	require.Equal(t, 0, run([]string{"help"}, &out, &errOut))
	assert.Contains(t, out.String(), "httpguard proxy [flags]")
}

func TestProxyHelpSaysWhatItDoesFirst(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"proxy", "-h"}, &out, &errOut))
	lines := strings.Split(out.String(), "\n")
	require.Greater(t, len(lines), 3, out.String())
	assert.Equal(t, "usage: httpguard proxy [flags]", lines[0])
	assert.Equal(t, "", lines[1])
	assert.True(t, strings.HasPrefix(lines[2], "Proxy runs a local gateway"), lines[2])
	assert.Contains(t, out.String(), "  --burst N\n")
}

func TestProxyBadFlagPrintsItsErrorAndTheShortUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 2, run([]string{"proxy", "--bogus"}, &out, &errOut))
	assert.Empty(t, out.String())
	assert.Equal(t, "httpguard proxy: flag provided but not defined: -bogus\n"+
		"usage: httpguard proxy [flags]\n"+
		"Run 'httpguard proxy -h' for details.\n", errOut.String())
}

func TestProxyFlagsOverrideTheEnvironment(t *testing.T) {
	env := map[string]string{"HTTPGUARD_RPS": "7", "HTTPGUARD_BUDGET": "2.5", "HTTPGUARD_BUDGET_PERIOD": "daily", "HTTPGUARD_LISTEN": "127.0.0.1:1",
		"HTTPGUARD_ATTEMPT_TIMEOUT": "90s"}
	s, err := parseProxyFlags([]string{"--listen", "127.0.0.1:2", "--max-retries=1"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:2", s.listen, "the command line wins")
	assert.Equal(t, 7.0, s.rps)
	assert.Equal(t, 1, s.maxRetries)
	c, err := s.proxyConfig(noEnv)
	require.NoError(t, err)
	require.Len(t, c.Upstreams, 1)
	assert.Equal(t, "/v1", c.Upstreams[0].Prefix)
	assert.Equal(t, "https://api.holysheep.ai/v1", c.Upstreams[0].URL.String())
	assert.Equal(t, httpguard.Money(2_500_000_000), c.Budget.Limit)
	assert.Equal(t, httpguard.Daily, c.Budget.Period)
	assert.Equal(t, 90*time.Second, c.Retry.AttemptTimeout)
}

func TestProxyConfigFileToolPricesReachTheProxy(t *testing.T) {
	file := filepath.Join(t.TempDir(), "proxy.yaml")
	require.NoError(t, os.WriteFile(file, []byte("prices:\n  m: {input: 1, output: 2}\ntool_prices: {web_search: 0.01}\n"+
		"tool_call_reserve: 3\ntool_result_reserve: 4000\n"), 0o600))
	s, err := parseProxyFlags([]string{"--config", file}, noEnv)
	require.NoError(t, err)
	c, err := s.proxyConfig(noEnv)
	require.NoError(t, err)
	assert.Equal(t, map[string]httpguard.Money{"web_search": httpguard.Cent}, c.ToolPrices)
	assert.Equal(t, int64(3), c.ToolCallReserve)
	assert.Equal(t, int64(4000), c.ToolResultReserve)
}

func TestProxyRejectsBadSettingsNamingThem(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "proxy.yaml")
	require.NoError(t, os.WriteFile(badConfig, []byte("tenants:\n  - name: a\n    key_sha256: nothex\n"), 0o600))
	fallbackConfig := filepath.Join(dir, "fallback.yaml")
	require.NoError(t, os.WriteFile(fallbackConfig, []byte(`upstreams:
  - prefix: /v1
    url: https://api.holysheep.ai/v1
    key_env: HOLYSHEEP_API_KEY
    fallbacks:
      - base_url: https://api.openai.com/v1
        key_env: OPENAI_API_KEY
tenants:
  - name: a
    key_sha256: `+strings.Repeat("ab", 32)+"\n"), 0o600))
	prices := filepath.Join(dir, "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"m": {"input": 1}}`), 0o600))
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--bogus"}, nil, "-bogus"},
		{[]string{"--budget", "ten"}, nil, "--budget"},
		{[]string{"--rps", "x"}, nil, `invalid value "x" for flag -rps`},
		{nil, map[string]string{"HTTPGUARD_RPS": "x"}, "HTTPGUARD_RPS"},
		{[]string{"--base-delay", "2s", "--max-delay", "1s"}, nil, "--max-delay (1s) must not be less than --base-delay (2s)"},
		{[]string{"--attempt-timeout", "-1s"}, nil, "--attempt-timeout must be >= 0, got -1s"},
		{[]string{"--budget", "1", "--budget-period", "weekly"}, nil, "--budget-period"},
		{[]string{"--budget-window", "1h"}, nil, "need --budget"},
		{[]string{"--upstream", "ftp://x"}, nil, "--upstream"},
		{[]string{"--prices", prices}, nil, `--prices ` + prices + `: prices: model "m": output is missing`},
		{[]string{"--config", badConfig}, nil, badConfig + ":3: key_sha256"},
		{[]string{"--budget", "1"}, nil, "a budget needs prices"},
		{[]string{"--config", fallbackConfig}, map[string]string{"HOLYSHEEP_API_KEY": "sk-hs"},
			fallbackConfig + `:6: fallback "api.openai.com": the environment variable "OPENAI_API_KEY" (key_env) is empty or unset`},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(tc.args, func(k string) string { return tc.env[k] }, &out, &errOut)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, errOut.String(), tc.want, "%v", tc.args)
	}
}

// Was a stumble: --burst without --rps was accepted and limited nothing
// (a burst counts requests, at the --rps rate), while a config file's
// limits block with a burst and no rps is an error.
func TestProxyRefusesABurstWithoutRPS(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--burst", "10"}, nil},
		{[]string{"--burst", "10", "--tpm", "100000"}, nil},
		{nil, map[string]string{"HTTPGUARD_BURST": "10"}},
	} {
		var out, errOut bytes.Buffer
		// An address it cannot listen on: without the check, the proxy
		// would start and fail there, with exit code 1.
		args := append([]string{"--listen", "nowhere"}, tc.args...)
		code := proxyCommand(args, func(k string) string { return tc.env[k] }, &out, &errOut)
		assert.Equal(t, 2, code, "%v %v", tc.args, tc.env)
		assert.Contains(t, errOut.String(), "limits (--rps, --burst, --tpm): burst without rps limits nothing", "%v %v", tc.args, tc.env)
	}
	_, err := parseProxyFlags([]string{"--burst", "10", "--rps", "5"}, noEnv)
	assert.NoError(t, err, "with --rps, --burst is the rate's burst")
}

// A config file with tenants but no upstreams sends to --upstream, whose
// real key comes from the variable --upstream-key-env names: the error for
// a missing key pointed at key_env, which such a file does not have.
// --rps NaN was accepted and limited nothing (NaN is not below 0, nor
// above), and --tpm 10, which the Limiter refuses, was refused in the
// Limiter's words (TokensPerMinute), not naming the flag.
func TestProxyRefusesRatesTheLimiterWouldNotTakeNamingTheFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rps", "NaN"}, "RequestsPerSecond must be a finite number >= 0, got NaN"},
		{[]string{"--tpm", "10"}, "TokensPerMinute 10 is too small"},
	} {
		var out, errOut bytes.Buffer
		code := proxyCommand(append([]string{"--listen", "nowhere"}, tc.args...), noEnv, &out, &errOut)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, errOut.String(), "httpguard proxy: limits (--rps, --burst, --tpm): "+tc.want, "%v", tc.args)
	}
}

func TestProxyNamesTheFlagOfAMissingUpstreamKey(t *testing.T) {
	config := filepath.Join(t.TempDir(), "tenants.yaml")
	require.NoError(t, os.WriteFile(config, []byte("tenants:\n  - name: a\n    key_sha256: "+strings.Repeat("ab", 32)+"\n"), 0o600))
	var out, errOut bytes.Buffer
	require.Equal(t, 2, proxyCommand([]string{"--config", config}, noEnv, &out, &errOut))
	assert.Contains(t, errOut.String(), "upstream /v1: the environment variable HTTPGUARD_UPSTREAM_KEY, holding its real key for the tenants, is empty or unset")
	assert.NotContains(t, errOut.String(), "key_env")
}

// The README's second command, with the prices.json it shows, starts a
// proxy: the walk a newcomer takes.
func TestTheREADMEsProxyCommandWithItsPricesStarts(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	cmd := regexp.MustCompile(`go run ./cmd/httpguard proxy (--prices prices.json [^\n]*)`).FindSubmatch(readme)
	require.NotNil(t, cmd, "the README's command with --prices")
	prices := regexp.MustCompile(`echo '([^'\n]*)' > prices.json`).FindSubmatch(readme)
	require.NotNil(t, prices, "the README's prices.json")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prices.json"), prices[1], 0o600))

	args := strings.Fields(strings.ReplaceAll(string(cmd[1]), "prices.json", filepath.Join(dir, "prices.json")))
	s, err := parseProxyFlags(args, noEnv)
	require.NoError(t, err, "%v", args)
	c, err := s.proxyConfig(noEnv)
	require.NoError(t, err)
	p, err := proxy.New(c)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.NotNil(t, c.Budget)
	assert.Positive(t, c.Limits.RPS)
}

func TestProxyServesUntilSIGTERM(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	defer srv.Close()
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--upstream", srv.BaseURL()}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	addr := listeningAddr(t, &errOut)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	waitServing(t, client, addr)
	resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(string(requestBody)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	stopBySIGTERM(t, done, &errOut)
	logs := errOut.String()
	assert.Contains(t, logs, `"msg":"httpguard proxy listening"`)
	assert.Contains(t, logs, `"msg":"request"`)
	assert.Contains(t, logs, `"msg":"httpguard proxy stopped"`)
}

// --metrics-listen serves the metrics on a listener of the operator's,
// until the proxy stops.
func TestProxyServesMetricsOnItsOwnListener(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	defer srv.Close()
	addr, metrics := freeAddr(t), freeAddr(t)
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", addr, "--metrics-listen", metrics, "--upstream", srv.BaseURL()}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	waitServing(t, client, addr)
	resp, err := client.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(string(requestBody)))
	require.NoError(t, err)
	resp.Body.Close()

	resp, err = client.Get("http://" + metrics + "/metrics")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(b), "httpguard_attempts_total")

	stopBySIGTERM(t, done, &errOut)
	_, err = client.Get("http://" + metrics + "/metrics")
	assert.Error(t, err, "the metrics listener closes with the proxy")
}

// freeAddr returns a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// deadAddr is an address where nothing listens: a port below 1024, which
// no test can listen on. A port a test listened on and closed may be
// another test's by the time it is dialled: CI once saw go-redis, dialling
// one such, read an HTTP server's 400 as a Redis reply.
const deadAddr = "127.0.0.1:1"

// listeningAddr waits for the proxy logging to errOut to listen, and
// returns the address it listens on: started with --listen 127.0.0.1:0,
// it has one no other test can take first.
func listeningAddr(t *testing.T, errOut *lockedBuffer) string {
	t.Helper()
	var addr string
	require.Eventually(t, func() bool {
		for line := range strings.Lines(errOut.String()) {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "httpguard proxy listening" {
				addr = rec.Addr
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the proxy logs where it listens")
	return addr
}

// waitServing waits until the proxy at addr answers /healthz.
func waitServing(t *testing.T, client *http.Client, addr string) {
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond)
}

// stopBySIGTERM sends this process SIGTERM and waits for the proxy
// command, which done reports, to exit with 0.
func stopBySIGTERM(t *testing.T, done <-chan int, errOut *lockedBuffer) {
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-done:
		assert.Equal(t, 0, code, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not stop on SIGTERM")
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The README promises a JSON log on stderr. go-redis logs its own failures
// (a dial that fails) through a global logger that writes plain text to
// the process's stderr; the proxy sends them into its JSON log instead.
func TestProxyLogsRedisFailuresInItsJSONLog(t *testing.T) {
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
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not stop on SIGTERM")
	}
	logs := errOut.String()
	assert.Contains(t, logs, "failed to dial", "go-redis's own records reach the proxy's log")
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		assert.True(t, json.Valid([]byte(line)), "not a JSON record: %s", line)
	}
}

// Was a bug: the config file's prices were written over --prices', so a
// model both priced (at $8 in one, $0 in the other) got the file's price
// silently, whichever was meant.
func TestProxyRefusesAModelPricedDifferentlyByPricesAndTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	prices := filepath.Join(dir, "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"gpt-4.1": {"input": 2, "output": 8}, "m": {"input": 1, "output": 2}}`), 0o600))
	conflict := filepath.Join(dir, "proxy.yaml")
	require.NoError(t, os.WriteFile(conflict, []byte("prices:\n  gpt-4.1: {input: 0, output: 0}\n"), 0o600))
	s, err := parseProxyFlags([]string{"--prices", prices, "--config", conflict}, noEnv)
	require.NoError(t, err)
	_, err = s.proxyConfig(noEnv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `model "gpt-4.1" is priced differently by --prices `+prices+` and by `+conflict)

	// The same price in both, and models of one only, add up.
	same := filepath.Join(dir, "same.yaml")
	require.NoError(t, os.WriteFile(same, []byte("prices:\n  gpt-4.1: {input: 2, output: 8}\n  n: {input: 3, output: 4}\n"), 0o600))
	s, err = parseProxyFlags([]string{"--prices", prices, "--config", same}, noEnv)
	require.NoError(t, err)
	c, err := s.proxyConfig(noEnv)
	require.NoError(t, err)
	assert.Len(t, c.Prices, 3)
	assert.Equal(t, 8*httpguard.Dollar, c.Prices["gpt-4.1"].Output)
}

// Was a bug: net.Listen takes "" for every interface and a random port, so
// an empty --listen (a script's --listen "$ADDR" with ADDR unset) served
// the proxy to the network, where the default takes only local clients.
func TestProxyRefusesAnEmptyListenAddress(t *testing.T) {
	_, err := parseProxyFlags([]string{"--listen", ""}, noEnv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--listen must not be empty")
	s, err := parseProxyFlags(nil, func(k string) string { return map[string]string{"HTTPGUARD_LISTEN": ""}[k] })
	require.NoError(t, err, "an empty variable is unset: the default")
	assert.Equal(t, "127.0.0.1:8787", s.listen)
}
