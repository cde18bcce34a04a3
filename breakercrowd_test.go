package httpguard

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// breakerFlood is a Breaker on a fake clock in front of an upstream that
// answers every request 503, as one that rejects unknown models may.
type breakerFlood struct {
	b     *Breaker
	clock *fakeClock
	rt    http.RoundTripper
}

func newBreakerFlood(t *testing.T, c BreakerConfig) *breakerFlood {
	t.Helper()
	f := &breakerFlood{clock: newFakeClock(moveOn)}
	b, err := NewBreaker(c)
	require.NoError(t, err)
	b.now = f.clock.Now
	f.b = b
	f.rt = b.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("no such model"))}, nil
	}))
	return f
}

// call sends a chat request for model and returns the error, nil when the
// upstream answered.
func (f *breakerFlood) call(t *testing.T, model string) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(chatBody(model, 16)))
	require.NoError(t, err)
	resp, err := f.rt.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (f *breakerFlood) circuits() int {
	f.b.mu.RLock()
	defer f.b.mu.RUnlock()
	return len(f.b.circuits)
}

func (f *breakerFlood) circuit(model string) *circuit {
	f.b.mu.RLock()
	defer f.b.mu.RUnlock()
	return f.b.circuits["api.test "+model]
}

// A gateway's tenant names the model, so it names the Breaker's circuits:
// a flood of made-up model names that each fail once (an upstream that
// answers an unknown model 503) left a circuit each with a run of
// failures, which no sweep forgot, since a run counts however far apart
// its failures come: memory grew with the request rate, for good. When
// circuits pile up, one unused for a RatioWindow now goes, run and all;
// a real model in use keeps its run, and opens.
func TestBreakerBoundsTheCircuitsOfAFloodOfFailingModelNames(t *testing.T) {
	f := newBreakerFlood(t, BreakerConfig{RatioWindow: time.Second, CoolDown: time.Second})
	const flood, perSecond = 20_000, 1_000
	most, swept := 0, false
	for i := range flood {
		require.NoError(t, f.call(t, "made-up-"+strconv.Itoa(i)))
		if i >= 2000 && i <= 2800 && i%200 == 0 { // in the flood, a real model failing every 200 ms
			require.NoError(t, f.call(t, "real-model"))
			if i == 2800 {
				s, ok := f.b.StatsOf("api.test real-model")
				require.True(t, ok)
				assert.Equal(t, CircuitOpen, s.State, "its run was kept through the sweeps, and opened it")
			}
		}
		f.clock.Advance(time.Second / perSecond)
		n := f.circuits()
		swept = swept || n < most
		most = max(most, n)
	}

	assert.True(t, swept)
	t.Logf("at most %d circuits", most)
	assert.LessOrEqual(t, most, 2*perSecond+crowdedKeys/8, "circuits held at once (%d made)", flood)
}

// Circuits that open pile up too, one per name failing a run, and an open
// circuit is kept while its cool-down lasts: forgetting it would send the
// next requests to a provider found down. Once its cool-down has ended it
// may go like a closed one, so that the flood holds the circuits of a
// CoolDown (or a RatioWindow) at most.
func TestBreakerKeepsOpenCircuitsThroughAFloodUntilTheirCoolDownEnds(t *testing.T) {
	f := newBreakerFlood(t, BreakerConfig{ConsecutiveFailures: 1, RatioWindow: time.Second, CoolDown: 5 * time.Second})
	const flood, perSecond = 20_000, 1_000
	most, last, sweptOpen := 0, 0, false
	var victim *circuit
	var openedAt time.Time
	for i := range flood {
		require.NoError(t, f.call(t, "made-up-"+strconv.Itoa(i)))
		if i == 16_000 { // open till 21 s: through the last sweeps
			require.NoError(t, f.call(t, "real-model"))
			victim, openedAt = f.circuit("real-model"), f.clock.Now()
			require.NotNil(t, victim)
			require.Equal(t, CircuitOpen, victim.stats(openedAt).State)
		}
		f.clock.Advance(time.Second / perSecond)
		n := f.circuits()
		if victim != nil && f.clock.Now().Before(openedAt.Add(5*time.Second)) {
			require.Same(t, victim, f.circuit("real-model"), "an open circuit is kept through its cool-down (at %d)", i)
			sweptOpen = sweptOpen || n < last
		}
		last, most = n, max(most, n)
	}

	assert.True(t, sweptOpen, "swept while it was open")
	t.Logf("at most %d circuits", most)

	assert.LessOrEqual(t, most, 2*5*perSecond+crowdedKeys/8, "circuits held at once (%d made)", flood)
	require.True(t, f.clock.Now().Before(openedAt.Add(5*time.Second)))
	err := f.call(t, "real-model")
	assert.True(t, errors.Is(err, ErrCircuitOpen), "still refused: %v", err)
}

// An attempt out while a sweep of crowded circuits forgets its circuit
// reports to a circuit no longer in use: its failure is not counted there,
// so that it opens nothing the Breaker no longer refuses with, announces
// no change of it, and does not tell a Retrier above that a retry would
// be refused (the key's next request makes a new circuit).
func TestBreakerAttemptOutWhenItsCircuitIsSweptOpensNothing(t *testing.T) {
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, RatioWindow: time.Second})
	release := make(chan struct{})
	inside := make(chan struct{})
	rt := r.b.Wrap(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		status := http.StatusOK
		if req.Header.Get("X-Slow") != "" {
			close(inside)
			<-release
			status = http.StatusServiceUnavailable
		}
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}, nil
	}))
	send := func(model string, slow bool) *http.Response {
		req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(chatBody(model, 16)))
		require.NoError(t, err)
		if slow {
			req.Header.Set("X-Slow", "1")
		}
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		return resp
	}
	done := make(chan *http.Response)
	go func() { done <- send("slow", true) }()
	<-inside
	r.clock.Advance(2 * time.Second) // unused for a RatioWindow, its attempt still out
	for i := range 2 * crowdedKeys {
		send("made-up-"+strconv.Itoa(i), false)
	}
	r.b.mu.RLock()
	_, kept := r.b.circuits["api.test slow"]
	r.b.mu.RUnlock()
	require.False(t, kept, "swept")

	close(release)
	resp := <-done

	assert.Empty(t, r.transitions())
	assert.Empty(t, resp.Header.Get("X-Should-Retry"))
	_, ok := r.b.StatsOf("api.test slow")
	assert.False(t, ok)
}
