package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemoPrintsEveryScenarioAndClient(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "-n", "40", "-seed", "3"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Empty(t, errOut.String())
	text := out.String()
	for _, s := range []string{"SCENARIO", "SUCCESS", "SERVER HITS", "AMPLIFICATION", "P50", "P99",
		"transient faults", "full outage", plain.name, naive.name, guarded.name} {
		assert.Contains(t, text, s)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	table := lines[len(lines)-7:] // header, 3 clients x 2 scenarios
	assert.True(t, strings.HasPrefix(table[0], "SCENARIO"), text)
}

func find(t *testing.T, rows []row, scenario, client string) result {
	t.Helper()
	for _, r := range rows {
		if r.scenario == scenario && r.client == client {
			return r.result
		}
	}
	require.Failf(t, "row not found", "%s / %s", scenario, client)
	return result{}
}

func TestDemoGuardedClientSucceedsMoreUnderTransientFaults(t *testing.T) {
	var out bytes.Buffer
	rows, err := demo(context.Background(), &out, 100, 1)
	require.NoError(t, err)
	p, g := find(t, rows, "transient faults", plain.name), find(t, rows, "transient faults", guarded.name)
	require.Less(t, p.successRate(), 1.0, "the seed must inject some faults")
	assert.Greater(t, g.successRate(), p.successRate())
}

func TestDemoGuardedClientKeepsOutageAmplificationNearOne(t *testing.T) {
	var out bytes.Buffer
	rows, err := demo(context.Background(), &out, 100, 1)
	require.NoError(t, err)
	assert.InDelta(t, 4.0, find(t, rows, "full outage", naive.name).amplification(), 0.01)
	assert.Less(t, find(t, rows, "full outage", guarded.name).amplification(), 1.3)
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
