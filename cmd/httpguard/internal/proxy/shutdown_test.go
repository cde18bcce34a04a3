package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShutdownLetsAStreamInFlightFinishAndSettle(t *testing.T) {
	up, release := heldStream(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	br := r.openStream(t)

	r.stop() // SIGTERM
	addr := strings.TrimPrefix(r.URL, "http://")
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, time.Millisecond, "no new connections once shutting down")
	select {
	case err := <-r.served:
		t.Fatalf("Serve returned with a stream in flight: %v", err)
	case <-time.After(10 * time.Millisecond):
	}

	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "[DONE]", "the stream finished")
	require.NoError(t, r.wait())
	want := testPrices["deepseek-v3.2"].Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 2})
	assert.Equal(t, want, r.budget.Spent(), "settled before Serve returned")
	assert.Equal(t, httpguard.Dollar-want, r.budget.Remaining(), "nothing left held")
}

func TestShutdownCutsWhatOutlivesTheGraceAndChargesIt(t *testing.T) {
	up, _ := heldStream(t)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}},
		Prices: testPrices, Budget: &BudgetSpec{Limit: httpguard.Dollar}, ShutdownGrace: 20 * time.Millisecond})
	br := r.openStream(t)

	r.stop()
	require.NoError(t, r.wait())
	_, err := io.ReadAll(br)
	assert.Error(t, err, "the stream was cut")
	assert.Positive(t, r.budget.Spent(), "a cut stream is charged what it may have cost")
	assert.Equal(t, httpguard.Dollar, r.budget.Spent()+r.budget.Remaining(), "nothing left held")
}
