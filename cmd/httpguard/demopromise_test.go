package main

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a gap: the demo printed its spend-cap rows and exited 0 whatever
// they said, so a Budget that let the server bill past its Limit (the
// library's central promise) would have shown it in a table no one reads
// closely, and the README's first command would still have succeeded.
// The demo now checks that promise, the one that holds exactly whatever
// the run's timing, and fails on it.
func TestDemoFailsWhenABudgetRowBreaksItsCap(t *testing.T) {
	kept := row{"spend cap", "httpguard Retrier + Budget", result{budget: true, budgetLimit: 1000, budgetSpent: 990, billed: 990}}
	unbudgeted := row{"spend cap", plain.name, result{billed: 5000}}
	require.NoError(t, keptCaps([]row{unbudgeted, kept}), "a client without a Budget may spend anything")

	over := kept
	over.result.billed, over.result.budgetSpent = 1001, 1001
	err := keptCaps([]row{unbudgeted, over})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "over the Budget's")
	assert.Contains(t, err.Error(), "spend cap, httpguard Retrier + Budget")

	undercounted := kept
	undercounted.result.budgetSpent = 980
	err = keptCaps([]row{undercounted})
	require.Error(t, err, "a Budget that counts less than the server billed may pass its Limit next time")
	assert.Contains(t, err.Error(), "counted")
}

func TestFleetDemoFailsWhenTheSharedCapIsPassed(t *testing.T) {
	perProcess := fleetRow{mode: "per-process layers", billed: 3 * fleetCap} // each replica its own cap: the point of the row
	shared := fleetRow{mode: "fleet mode (Redis)", shared: true, billed: fleetCap}
	require.NoError(t, keptFleetCap([]fleetRow{perProcess, shared}))
	shared.billed = fleetCap + 1
	err := keptFleetCap([]fleetRow{perProcess, shared})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fleet mode (Redis)")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// Was a gap: the fleet table's write error was dropped, so `httpguard demo
// --fleet 3 > /full/disk` exited 0 with no table.
func TestFleetTableReportsItsWriteError(t *testing.T) {
	assert.ErrorContains(t, printFleetTable(failingWriter{}, []fleetRow{{mode: "fleet mode (Redis)"}}), "disk full")
}
