package bench

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A provider is degraded far more often than it is down. At random 503s
// up to 20% with 3 retries, the Retrier's retry budget must get out of the
// way: at least 99.5% of calls served, with no more requests per call than
// go-retryablehttp sends (which has no budget). TestOutageAmplification
// checks the other side: a full outage, and the recovery.
//
// Each peer gets its own server with the same seed, so the n-th request
// each one sends meets the same fate. Run with -v for the table the README
// shows.
func TestFaultRates(t *testing.T) {
	const calls = 3000
	rates := []float64{0.10, 0.15, 0.20}
	type row struct {
		served   [2]int
		requests [2]int64
	}
	rows := make([]row, len(rates))
	var wg sync.WaitGroup
	for i, p := range []peer{peers[0], peers[1]} {
		for j, rate := range rates {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := newUpstream(t, seeded503(rate, nil))
				rows[j].served[i] = send(t, p.wrap(t, loopbackTransport(t)), u, calls)
				rows[j].requests[i] = u.hits.Load()
			}()
		}
	}
	wg.Wait()

	var table strings.Builder
	table.WriteString("\n| random 503s, 3 retries | httpguard: served | requests per call | go-retryablehttp: served | requests per call |\n")
	table.WriteString("| --- | --- | --- | --- | --- |\n")
	for j, r := range rows {
		fmt.Fprintf(&table, "| %.0f%%, %d calls | %.1f%% | %.3f | %.1f%% | %.3f |\n", 100*rates[j], calls,
			100*float64(r.served[0])/calls, float64(r.requests[0])/calls,
			100*float64(r.served[1])/calls, float64(r.requests[1])/calls)
	}
	t.Log(table.String())

	for j, rate := range rates {
		assert.GreaterOrEqual(t, float64(rows[j].served[0])/calls, 0.995, "%.0f%% faults: served", 100*rate)
		assert.LessOrEqual(t, rows[j].requests[0], rows[j].requests[1], "%.0f%% faults: requests", 100*rate)
	}
}

// seeded503 answers like answer, except that a seeded random share of
// requests (all of them while down is set) get a 503. Each peer gets its
// own handler with the same seed, so the n-th request each one sends meets
// the same fate.
func seeded503(rate float64, down *atomic.Bool) http.HandlerFunc {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(2026, 2026))
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := rng.Float64() < rate
		mu.Unlock()
		if fail || down != nil && down.Load() {
			unavailable(w, r)
			return
		}
		answer(w, r)
	}
}
