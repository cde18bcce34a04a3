package httpguard

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 429 that lowers the key's rate and asks for a pause shorter than the
// lowered rate's interval (Retry-After-Ms: 20 at 7/s): the queue starts
// again when the pause ends, but not before the lowered interval after the
// last request sent, as it does after a 429 without a pause. Before, the
// pause started the queue at its end, 20 ms after the request refused, and
// the bucket (Burst 5, read at the lowered rate) let the next request go:
// a burst while the rate is lowered, right after the provider refused one.
func TestLimiterPauseShorterThanTheLoweredIntervalKeepsTheInterval(t *testing.T) {
	clk := newFakeClock(block)
	l := newOwnLimiter(t, LimitConfig{RequestsPerSecond: 10, Burst: 5}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After-Ms", "20")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	})
	status, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status)

	getConcurrently(t, clk, client, srv.URL, 3)

	times := hits.Times()
	require.Len(t, times, 4)
	assert.GreaterOrEqual(t, times[1].Sub(times[0]), time.Second/7, "the first turn after the 429: spaced below the lowered rate")
	for i := 2; i < len(times); i++ {
		assert.GreaterOrEqual(t, times[i].Sub(times[i-1]), curveInterval(t, l, srv, times[i-1]), "turn %d after the 429: spaced below the rate recovering", i+1)
	}
}
