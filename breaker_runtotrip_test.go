package httpguard

import (
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A ConsecutiveFailures so large that no run reaches it leaves the circuit
// to the ratio rule: the run a degraded provider needs, scaled up from it,
// must not overflow into a run every failure reaches.
func TestBreakerHugeConsecutiveFailuresNeverOpensOnADegradedProvider(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: math.MaxInt, FailureRatio: 1, MinCalls: 20})
	base := srv.Client().Transport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	c := &http.Client{Transport: Chain(base, r.b)}

	for range 100 {
		resp, err := c.Get(srv.URL + "/v1/models")
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Empty(t, r.transitions(), "one failure in five opened the circuit")
}
