package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain runs the tests, with SIGTERM caught for the whole run: the
// proxy's tests stop it by sending this process SIGTERM, and one that
// arrives while no proxy listens for it (one slow to start on a loaded
// machine, or already gone) killed the test binary ("signal: terminated",
// no test named). Caught, it leaves the waiting test to fail by its
// timeout, saying which proxy did not stop.
func TestMain(m *testing.M) {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)
	goleak.VerifyTestMain(m)
}

func TestDemoPrintsEveryScenarioAndClient(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "-n", "10", "-seed", "3"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Empty(t, errOut.String())
	text := out.String()
	for _, s := range []string{"SCENARIO", "SUCCESS", "SERVER HITS", "AMPLIFICATION", "P50", "P99",
		"SPEND", "transient faults", "full outage", "provider rate limit", "spend cap", plain.name, naive.name, guarded.name, paced.name, "httpguard Retrier + Budget"} {
		assert.Contains(t, text, s)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	assert.Contains(t, text, "Budget.Spent() reports")
	legend := text[strings.Index(text, "SUCCESS is"):]
	for _, column := range []string{"SUCCESS", "SERVER HITS", "AMPLIFICATION", "429s", "P50", "P99", "SPEND"} {
		assert.Contains(t, legend, column, "the legend after the table says what each column counts")
	}
	assert.Contains(t, legend, "What it shows:")
	header := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "SCENARIO") })
	require.GreaterOrEqual(t, header, 0, text)
	assert.GreaterOrEqual(t, len(lines)-header-1, 3+3+3+2, "a row per scenario and client")
}

var (
	demoOnce sync.Once
	demoRows []row
	demoErr  error
)

// demoResult returns the result of a client in a scenario of one shared run
// of the demo (-n 100 -seed 1), which the tests below examine.
func demoResult(t *testing.T, scenario, client string) result {
	t.Helper()
	demoOnce.Do(func() { demoRows, demoErr = demo(context.Background(), io.Discard, 100, 1) })
	require.NoError(t, demoErr)
	for _, r := range demoRows {
		if r.scenario == scenario && r.client == client {
			return r.result
		}
	}
	require.Failf(t, "row not found", "%s / %s", scenario, client)
	return result{}
}

func TestDemoGuardedClientSucceedsMoreUnderTransientFaults(t *testing.T) {
	p, g := demoResult(t, "transient faults", plain.name), demoResult(t, "transient faults", guarded.name)
	require.Less(t, p.successRate(), 1.0, "the seed must inject some faults")
	assert.Greater(t, g.successRate(), p.successRate())
}

func TestDemoGuardedClientKeepsOutageAmplificationNearOne(t *testing.T) {
	assert.InDelta(t, 4.0, demoResult(t, "full outage", naive.name).amplification(), 0.01)
	assert.Less(t, demoResult(t, "full outage", guarded.name).amplification(), 1.3)
}

func TestDemoLimiterProvokesNoRateLimits(t *testing.T) {
	p, g := demoResult(t, "provider rate limit", plain.name), demoResult(t, "provider rate limit", paced.name)
	assert.Positive(t, p.stats.RateLimited, "the plain client runs into the provider's limit")
	assert.Zero(t, g.stats.RateLimited)
	assert.Equal(t, g.requests, g.ok)
}

func TestDemoBudgetStopsSpendAtTheCapAndAgreesWithTheServer(t *testing.T) {
	p, g := demoResult(t, "spend cap", plain.name), demoResult(t, "spend cap", "httpguard Retrier + Budget")
	require.True(t, g.budget)
	assert.Greater(t, p.billed, g.budgetLimit, "the plain client spends past the cap")
	assert.LessOrEqual(t, g.budgetSpent, g.budgetLimit)
	assert.Greater(t, g.budgetSpent, g.budgetLimit*8/10, "the cap is used, not just respected")
	assert.Equal(t, g.billed, g.budgetSpent, "the budget counts exactly what the server billed")
}

func TestUnknownCommandPrintsUsageAndExits2(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run([]string{"serve"}, &out, &errOut))
	assert.Empty(t, out.String())
	assert.Contains(t, errOut.String(), `unknown command "serve"`)
	assert.Contains(t, errOut.String(), "usage:")
}

func TestNoCommandPrintsUsageAndExits2(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(nil, &out, &errOut))
	assert.Contains(t, errOut.String(), "usage:")
}

func TestHelpPrintsUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 0, run([]string{"help"}, &out, &errOut))
	assert.Contains(t, out.String(), "httpguard demo [-n requests] [-seed N]")
}

func TestDemoRejectsBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run([]string{"demo", "-n", "0"}, &out, &errOut))
	assert.Equal(t, 2, run([]string{"demo", "-bogus"}, &out, &errOut))
}

// Was a bug: a huge -n overflowed the spend cap (n times $0.000005, shown
// as -$9223372036.85) and panicked making the latencies (makeslice: len
// out of range), after printing the header.
func TestDemoRefusesAnNTooLargeBeforeRunning(t *testing.T) {
	for _, n := range []string{"9999999999999999", "1844674407370956", "1000001"} {
		var out, errOut bytes.Buffer
		assert.Equal(t, 2, run([]string{"demo", "-n", n}, &out, &errOut), n)
		assert.Empty(t, out.String(), n)
		assert.Contains(t, errOut.String(), "-n must be between 1 and 1000000, got "+n)
	}
}

// Was a stumble: demo -h printed Go's bare flag list ("Usage of httpguard
// demo:", "-fleet int") on stderr.
func TestDemoHelpSaysWhatItDoesAndListsItsFlagsWithDefaults(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run([]string{"demo", arg}, &out, &errOut))
		assert.Empty(t, errOut.String())
		lines := strings.Split(out.String(), "\n")
		require.Greater(t, len(lines), 4, out.String())
		assert.Equal(t, "usage: httpguard demo [-n requests] [-seed N]", lines[0])
		assert.Equal(t, "       httpguard demo --fleet N [--redis ADDR]", lines[1])
		assert.Equal(t, "", lines[2])
		assert.True(t, strings.HasPrefix(lines[3], "Demo compares"), lines[3])
		for _, s := range []string{"  -n requests\n", "(default 200)", "  -seed N\n", "(default 1)",
			"  --fleet N\n", "  --redis ADDR\n", "(default: an embedded miniredis)"} {
			assert.Contains(t, out.String(), s)
		}
		assert.NotContains(t, out.String(), "Usage of")
	}
}

// As with the go command, help COMMAND is COMMAND -h; it printed the
// top-level help whatever followed.
func TestHelpOfACommandIsItsUsage(t *testing.T) {
	for _, cmd := range []string{"demo", "proxy"} {
		var help, h, errOut bytes.Buffer
		require.Equal(t, 0, run([]string{"help", cmd}, &help, &errOut))
		require.Equal(t, 0, run([]string{cmd, "-h"}, &h, &errOut))
		assert.Equal(t, h.String(), help.String())
		assert.True(t, strings.HasPrefix(help.String(), "usage: httpguard "+cmd), help.String())
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run([]string{"help", "serve"}, &out, &errOut))
	assert.Contains(t, errOut.String(), `httpguard help: unknown command "serve"`)
}

func TestDemoBadFlagPrintsItsErrorAndTheShortUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 2, run([]string{"demo", "-bogus"}, &out, &errOut))
	assert.Empty(t, out.String())
	assert.Equal(t, "httpguard demo: flag provided but not defined: -bogus\n"+
		"usage: httpguard demo [-n requests] [-seed N]\n"+
		"       httpguard demo --fleet N [--redis ADDR]\n"+
		"Run 'httpguard demo -h' for details.\n", errOut.String())
}

func TestHelpSaysWhatTheCommandDoesAndListsItsCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"help"}, &out, &errOut))
	help := out.String()
	lines := strings.Split(help, "\n")
	require.Greater(t, len(lines), 2, help)
	assert.True(t, strings.HasPrefix(lines[0], "httpguard "), lines[0])
	assert.Equal(t, "", lines[1], "one line of what it does")
	for _, s := range []string{"\thttpguard demo [-n requests] [-seed N]", "\thttpguard demo --fleet N [--redis ADDR]",
		"\thttpguard proxy [flags]", `"httpguard help demo"`, `"httpguard help proxy"`} {
		assert.Contains(t, help, s)
	}
}

var (
	fleetOnce sync.Once
	fleetRows []fleetRow
	fleetOut  string
	fleetErr  error
)

// fleetRun returns the rows and the output of one shared run of the fleet
// demo with 3 replicas, on the embedded Redis, which the tests below
// examine.
func fleetRun(t *testing.T) ([]fleetRow, string) {
	t.Helper()
	fleetOnce.Do(func() {
		var out bytes.Buffer
		fleetRows, fleetErr = fleetDemo(context.Background(), &out, 3, "")
		fleetOut = out.String()
	})
	require.NoError(t, fleetErr)
	require.Len(t, fleetRows, 2)
	return fleetRows, fleetOut
}

func TestFleetDemoPrintsBothModesSideBySide(t *testing.T) {
	_, out := fleetRun(t)
	for _, s := range []string{"MODE", "REPLICAS", "RATE SEEN", "429s", "SPEND", "OF THE CAP",
		"per-process layers", "fleet mode (Redis)", "an embedded miniredis on 127.0.0.1:"} {
		assert.Contains(t, out, s)
	}
}

func TestFleetDemoSharedBudgetKeepsTheFleetUnderTheCap(t *testing.T) {
	rows, _ := fleetRun(t)
	perProcess, fleet := rows[0], rows[1]
	assert.Greater(t, perProcess.billed, 2*fleetCap, "3 replicas, each with its own cap, spend past the cap")
	assert.LessOrEqual(t, fleet.billed, fleetCap, "sharing one cap, they stop at it")
	assert.Greater(t, fleet.billed, fleetCap*3/4, "and use it")
}

// Was a bug: each replica sent 25 requests, about 73% of what its cap
// pays for, so no per-process Budget ever refused anything, and the row
// the demo (and the README) describes as replicas spending the cap once
// each showed only 25 requests per replica billed (291% for 4 replicas,
// not the 4 caps claimed). Each replica now sends more than its cap pays
// for: its own cap stops it where the shared cap stops the fleet.
func TestFleetDemoPerProcessReplicasEachSpendTheirOwnCap(t *testing.T) {
	rows, _ := fleetRun(t)
	perProcess, fleet := rows[0], rows[1]
	assert.Less(t, perProcess.ok, perProcess.requests, "each replica's own cap refused some of its requests")
	assert.Greater(t, perProcess.billed, 3*fleetCap*3/4, "3 replicas each spend most of a cap, as the fleet does of one")
	assert.GreaterOrEqual(t, perProcess.billed, 3*fleet.billed*9/10, "each replica spends about what the whole fleet does")
}

func TestFleetDemoSharedLimiterKeepsTheFleetUnderTheProvidersRate(t *testing.T) {
	rows, _ := fleetRun(t)
	perProcess, fleet := rows[0], rows[1]
	assert.Positive(t, perProcess.stats.RateLimited, "3 replicas, each at the provider's rate, run into its limit")
	assert.Zero(t, fleet.stats.RateLimited, "sharing one rate, they never do")
	assert.Equal(t, fleet.ok, int(fleet.stats.Requests), "every request sent was answered")
}

// --redis takes any server at an address (here a miniredis of the test's
// own), and the run leaves no key there.
func TestFleetDemoUsesTheRedisGivenAndCleansUp(t *testing.T) {
	mr := miniredis.RunT(t)
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--fleet", "2", "--redis", mr.Addr()}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "the server at "+mr.Addr())
	assert.Empty(t, mr.Keys(), "the run's keys are deleted")
}

func TestFleetDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--fleet", "1"}, {"--fleet", "33"}, {"--redis", "127.0.0.1:6379"}, {"--fleet", "x"},
		{"--fleet", "2", "-n", "5"}, {"-seed", "7", "--fleet", "2"}} { // -n and -seed would be silently ignored
		var out, errOut bytes.Buffer
		assert.Equal(t, 2, run(append([]string{"demo"}, args...), &out, &errOut), "%v", args)
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run([]string{"demo", "--fleet", "2", "--redis", "127.0.0.1:1"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "httpguard demo: --redis: no answer from 127.0.0.1:1")
}

// Was a bug: --fleet 0 was taken for no --fleet, and ran the scenarios,
// where the usage says 2 to 32 (and --fleet 0 --redis ADDR said "--redis
// needs --fleet").
func TestFleetDemoRejectsAFleetOfZero(t *testing.T) {
	for _, args := range [][]string{{"--fleet", "0"}, {"--fleet", "0", "--redis", "127.0.0.1:6379"}} {
		var out, errOut bytes.Buffer
		assert.Equal(t, 2, run(append([]string{"demo"}, args...), &out, &errOut), "%v", args)
		assert.Empty(t, out.String(), "%v", args)
		assert.Contains(t, errOut.String(), "--fleet must be between 2 and 32", "%v", args)
	}
}
