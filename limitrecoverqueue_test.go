package httpguard

import (
	"context"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Requests that queue while a key's rate recovers from a 429 are spaced
// at the rate the recovery curve gives at their places, as a queue a
// decrease moves is (see restart): the rate in force when a request
// queues is the lowest its queue will see. At 50/s (Burst 1), a bare 429
// cuts the rate to 35/s, back at 50/s 3.35 s later; 150 requests that
// then arrive together go in 3.25 s on the curve. They went 1/35 s apart
// to the last, in 4.26 s: 31% longer, the queue lagging the curve by its
// whole length (against a provider whose rate fell to a fifth and came
// back, the 10 s after it did served 33% of its rate, not 61%).
func TestLimiterSpacesRequestsQueuedWhileTheRateRecoversOnTheCurve(t *testing.T) {
	const rps, queued = 50.0, 150
	clk := newFakeClock(block)
	l := newOwnLimiter(t, LimitConfig{RequestsPerSecond: rps, Burst: 1}, clk)
	srv, client, hits := newLimitedServer(t, l, clk, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	})
	status, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status)
	cut := clk.Now()

	getConcurrently(t, clk, client, srv.URL, queued)

	times := hits.Times()[1:]
	require.Len(t, times, queued)
	// W(t) = C·(t−K)³ + Wmax, K = ∛(Wmax·(1−β)/C), from the cut on.
	k := math.Cbrt(rps * (1 - DefaultDecreaseFactor) / DefaultRecoveryScale)
	curve := func(at time.Time) float64 {
		x := at.Sub(cut).Seconds() - k
		return min(DefaultRecoveryScale*x*x*x+rps, rps)
	}
	want := times[0]
	for range queued - 1 {
		want = want.Add(time.Duration(float64(time.Second) / curve(want)))
	}
	t.Logf("the last of %d queued went %v after the cut; on the curve, %v", queued, times[queued-1].Sub(cut), want.Sub(cut))
	assert.InDelta(t, want.Sub(cut).Seconds(), times[queued-1].Sub(cut).Seconds(), 0.03, "the last request goes when the curve lets it")
	for i := 1; i < queued; i++ {
		assert.GreaterOrEqual(t, times[i].Sub(times[i-1]), time.Duration(float64(time.Second)/curve(times[i-1]))-time.Millisecond, "request %d goes faster than the curve", i)
	}
}
