package httpguard

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A probe given up for lost that ends later must not give its slot to
// another probe: the probes sent after it already have the slots, and a
// half-open circuit lets only Probes through at a time.
func TestBreakerALostProbeEndingLateFreesNoSlotOfTheProbesAfterIt(t *testing.T) {
	srv, status, release := holdingStreams(t)
	defer close(release)
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 1})
	post := poster(clientFor(t, r.b), srv)
	status.Store(http.StatusServiceUnavailable)
	resp, err := post()
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, CircuitOpen, r.stats(t).State)
	status.Store(0)

	r.clock.Advance(time.Minute)
	lost, err := post() // the probe; its stream never ends
	require.NoError(t, err)
	r.clock.Advance(time.Minute)
	second, err := post() // the first given up for lost, another goes
	require.NoError(t, err)
	defer second.Body.Close()

	lost.Body.Close() // the caller stops reading the lost one: says nothing

	_, err = post()
	assert.ErrorIs(t, err, ErrCircuitOpen, "one probe at a time: the second is still out")
	assert.Equal(t, 3, int(srv.hits.Load()), "the failure and two probes, one after the other was lost")
}

// holdingStreams is a server whose chat streams stay open until release is
// closed; while status is set it answers with that status instead.
func holdingStreams(t *testing.T) (srv *server, status *atomic.Int32, release chan struct{}) {
	status, release = new(atomic.Int32), make(chan struct{})
	srv = newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		if s := status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, openAIChunk)
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, openAIDone)
	})
	return srv, status, release
}

// poster returns a function that posts a chat request to srv through c.
func poster(c *http.Client, srv *server) func() (*http.Response, error) {
	return func() (*http.Response, error) {
		return c.Post(srv.URL+"/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
	}
}

// A probe is given up for lost when it has not answered within a
// cool-down of being sent, not a cool-down after the circuit turned
// half-open.
func TestBreakerGivesUpNoProbeSentLessThanACoolDownAgo(t *testing.T) {
	srv, status, release := holdingStreams(t)
	defer close(release)
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 1})
	post := poster(clientFor(t, r.b), srv)
	status.Store(http.StatusServiceUnavailable)
	resp, err := post()
	require.NoError(t, err)
	resp.Body.Close()
	r.clock.Advance(time.Minute)
	status.Store(http.StatusTooManyRequests)
	resp, err = post() // turns the circuit half-open; a 429 says nothing
	require.NoError(t, err)
	resp.Body.Close()
	status.Store(0)
	r.clock.Advance(59 * time.Second)

	probe, err := post()
	require.NoError(t, err, "the slot of the first probe is taken")
	defer probe.Body.Close()
	r.clock.Advance(time.Second)
	_, err = post()

	assert.ErrorIs(t, err, ErrCircuitOpen, "the probe out was sent a second ago")
}

// The outcome of a probe given up for lost still says whether the
// provider is back: a success closes the circuit however late it comes.
func TestBreakerCountsTheSuccessOfAProbeGivenUpForLost(t *testing.T) {
	srv, status, release := holdingStreams(t)
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 1})
	post := poster(clientFor(t, r.b), srv)
	status.Store(http.StatusServiceUnavailable)
	resp, err := post()
	require.NoError(t, err)
	resp.Body.Close()
	status.Store(0)
	r.clock.Advance(time.Minute)
	slow, err := post() // a long answer, given up for lost before it ends
	require.NoError(t, err)
	r.clock.Advance(time.Minute)
	next, err := post()
	require.NoError(t, err)
	defer next.Body.Close()

	close(release)
	_, err = io.ReadAll(slow.Body)
	require.NoError(t, err)
	slow.Body.Close()

	assert.Equal(t, CircuitClosed, r.stats(t).State)
}
