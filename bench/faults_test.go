package bench

import (
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// faulty answers like answer, except that a seeded 5% of requests fail:
// half with a 503, half with a connection reset after the request was read.
// Each peer gets a fresh faulty with the same seed, so the n-th request
// each one sends meets the same fate.
func faulty(seed uint64) http.HandlerFunc {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed))
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		p := rng.Float64()
		mu.Unlock()
		switch {
		case p < 0.025:
			unavailable(w, r)
		case p < 0.05:
			reset(w)
		default:
			answer(w, r)
		}
	}
}

// reset closes the connection with a TCP RST instead of answering.
func reset(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

func TestSuccessUnderFaults(t *testing.T) {
	succeeded := map[string]int{}
	for _, p := range peers {
		t.Run(p.name, func(t *testing.T) {
			u := newUpstream(t, faulty(2026))
			succeeded[p.name] = send(t, p.wrap(t, loopbackTransport(t)), u, logicalRequests)
			t.Logf("%s: %d/%d calls succeeded (%.1f%%) under 5%% faults, %d requests (%.3f per call), %d connections",
				p.name, succeeded[p.name], logicalRequests, 100*float64(succeeded[p.name])/logicalRequests,
				u.hits.Load(), float64(u.hits.Load())/logicalRequests, u.conns.Load())
		})
	}
	assert.Equal(t, logicalRequests, succeeded["httpguard"])
	assert.GreaterOrEqual(t, succeeded["httpguard"], succeeded["retryablehttp"])
	assert.GreaterOrEqual(t, succeeded["httpguard"], succeeded["failsafehttp"])
}
