package httpguard

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A half-open circuit whose probe is out refuses the requests behind it
// until the probe answers or a CoolDown passes; a flood of new keys that
// sweeps the crowded circuits meanwhile keeps it, so that no second probe
// goes and the probe's failure lands on the circuit in use and opens it
// again.
func TestBreakerKeepsAHalfOpenCircuitWithItsProbeOutThroughAFlood(t *testing.T) {
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, RatioWindow: time.Second, CoolDown: 5 * time.Second, Probes: 1})
	release := make(chan struct{})
	inside := make(chan struct{})
	rt := r.b.Wrap(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		status := http.StatusOK
		if req.Header.Get("X-Slow") != "" {
			close(inside)
			<-release
			status = http.StatusServiceUnavailable
		} else if strings.Contains(req.Header.Get("X-Model"), "real") {
			status = http.StatusServiceUnavailable
		}
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}, nil
	}))
	send := func(model string, slow bool) error {
		req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(chatBody(model, 16)))
		require.NoError(t, err)
		req.Header.Set("X-Model", model)
		if slow {
			req.Header.Set("X-Slow", "1")
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	require.NoError(t, send("real", false), "a failure opens it")
	r.clock.Advance(5 * time.Second)
	probe := make(chan error)
	go func() { probe <- send("real", true) }()
	<-inside
	r.clock.Advance(2 * time.Second) // the probe out past a RatioWindow, within its CoolDown

	for i := range 3 * crowdedKeys {
		require.NoError(t, send("made-up-"+strconv.Itoa(i), false))
		r.clock.Advance(time.Second / 2000) // 1.5 s in all: the probe is out for 3.5 s of its 5
	}
	r.b.mu.RLock()
	_, kept := r.b.circuits["api.test real"]
	left := len(r.b.circuits)
	r.b.mu.RUnlock()
	require.Less(t, left, 3*crowdedKeys, "the flood was swept")
	assert.True(t, kept, "the half-open circuit with its probe out is kept")
	err := send("real", false)
	assert.True(t, errors.Is(err, ErrCircuitOpen), "no second probe goes: %v", err)

	close(release)
	require.NoError(t, <-probe)
	s, ok := r.b.StatsOf("api.test real")
	require.True(t, ok)
	assert.Equal(t, CircuitOpen, s.State, "the probe's failure opened it again")
	assert.Equal(t, []string{"closed→open", "open→half-open", "half-open→open"}, r.transitions())
}
