package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a review): SPEND priced the usage of the answers the
// server sent to their end (Stats.PromptTokens and CompletionTokens), not
// what it billed (the Billable* counters). An attempt reset after the
// provider read it is billed, the demo's own point ("a provider bills every
// attempt that reached its model"), yet the table showed $0.00 for it: the
// transient-faults row of the plain client hid its resets, and the spend
// cap's "the server billed" line could not show an attempt the Budget had
// failed to charge.
func TestDemoSpendCountsAttemptsResetAfterTheProviderReadThem(t *testing.T) {
	reset := httpguardtest.ConnectionReset()
	r, err := measure(context.Background(), setup{outage: &reset}, plain.newClient,
		workload{requests: 4, concurrency: 2, body: requestBody})
	require.NoError(t, err)
	require.Zero(t, r.ok)
	require.EqualValues(t, 4, r.stats.Resets, "every attempt was read, then reset")

	st := r.stats
	want := prices()["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: st.BillablePromptTokens,
		CachedInputTokens: st.BillableCachedTokens, OutputTokens: st.BillableCompletionTokens})
	assert.Positive(t, want, "the provider billed the attempts it read")
	assert.Equal(t, want, r.billed, "SPEND is what the server billed")
}

// Was a bug (found by a review): --redis promises that the run's keys are
// deleted when done, and the Budget's never expire; but an interrupted run
// (Ctrl-C cancels the demo's context) returned before deleting them, and
// left them on the user's Redis for good.
func TestFleetDemoInterruptedLeavesNoKeysOnTheRedisGiven(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan struct{})
	go func() { // interrupts the run once fleet mode has written to Redis
		defer close(watched)
		for ctx.Err() == nil {
			if len(mr.Keys()) > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := fleetDemo(ctx, io.Discard, 2, mr.Addr())
	cancel()
	<-watched
	require.ErrorIs(t, err, context.Canceled, "the run was interrupted")
	assert.Empty(t, mr.Keys(), "the run's keys are deleted")
}

// Was a bug: a short run's table contradicted the text printed with it.
// With -n 1 the header said "8 at a time" of one request, and the full
// outage row showed the Retrier at 6.00x against go-retryablehttp's 4.00x
// (a fresh Retrier's reserve of retries, spent on one request) while
// "What it shows" said that the retry budget keeps the load near 1x where
// fixed retries multiply it. The header says how many go at once, and the
// text says when the reserve shows.
func TestDemoTextAgreesWithTheTableOfAShortRun(t *testing.T) {
	var out bytes.Buffer
	rows, err := demo(context.Background(), &out, 1, 1)
	require.NoError(t, err)
	amplification := map[string]float64{}
	for _, r := range rows {
		if r.scenario == "full outage" {
			amplification[r.client] = r.result.amplification()
		}
	}
	require.Greater(t, amplification[guarded.name], amplification[naive.name], "one request spends the Retrier's reserve")

	text := out.String()
	assert.Contains(t, text, "1 logical requests per client and scenario, 1 at a time")
	assert.Contains(t, text, "once it has\nspent the few retries a fresh Retrier holds in reserve", "the text says why the row is above 1x")
}

// Was a bug: the fleet table showed fleet mode's RATE SEEN above the
// provider's stated 40 requests/s (46.7/s, with no 429) under the text
// "In fleet mode they share both", which reads as a shared Limiter
// letting the fleet past the provider's rate. The rate counts the
// Limiter's burst at the start of a short run; only the README said so.
// The output now says what RATE SEEN counts.
func TestFleetDemoSaysWhyItsRateSeenMayPassTheProvidersRate(t *testing.T) {
	_, out := fleetRun(t)
	assert.Contains(t, out, "RATE SEEN is the\nprovider's hits per second from the first to the last: a Limiter's burst of 5 at the start counts")
}

// Was a bug: where 127.0.0.1 cannot be reached (a network namespace of
// its own, as `unshare -n` makes, its loopback down), every request of
// the demo failed to connect, and it printed tables of zeros (0% success,
// 0 server hits) under its usual conclusions, and exited 0. It now says
// that its embedded server cannot be reached, and exits 1.
func TestDemoFailsWhenItsServerCannotBeReached(t *testing.T) {
	unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ENETUNREACH}
	defer func(d func(context.Context, string, string) (net.Conn, error)) { dial = d }(dial)
	dial = func(context.Context, string, string) (net.Conn, error) { return nil, unreachable }

	for _, args := range [][]string{{"demo", "-n", "1"}, {"demo", "--fleet", "2"}} {
		var out, errOut bytes.Buffer
		assert.Equal(t, 1, run(args, &out, &errOut), "%v", args)
		assert.Contains(t, errOut.String(), "the embedded server cannot be reached (is the loopback interface up?)", "%v", args)
		assert.NotContains(t, out.String(), "REPLICAS", "%v: no table of zeros", args)
		assert.NotContains(t, out.String(), "SCENARIO", "%v: no table of zeros", args)
	}
}
