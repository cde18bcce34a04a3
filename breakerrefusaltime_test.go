package httpguard

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The refusal of an open circuit says from when probes go, to the second:
// a caller that retries at the time it names is let through, even when the
// cool-down ends within a second (a real clock's circuit opens between two
// seconds). Cut to the second, it named a time up to a second early, and a
// retry at that time was refused again.
func TestBreakerRefusalNamesNoTimeBeforeProbesGo(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1, CoolDown: 30 * time.Second, Probes: 1})
	r.clock.Advance(400 * time.Millisecond) // the circuit opens at 12:00:00.4
	c := clientFor(t, r.b)
	code, err := callChatURL(c, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, code)

	_, err = callChatURL(c, srv.URL)
	require.ErrorIs(t, err, ErrCircuitOpen)
	m := regexp.MustCompile(`probes from (\S+)\)`).FindStringSubmatch(err.Error())
	require.Len(t, m, 2, err.Error())
	from, perr := time.Parse(time.RFC3339, m[1])
	require.NoError(t, perr)
	assert.Equal(t, "2026-11-25T12:00:31Z", m[1], "12:00:30.4, rounded up")

	r.clock.Advance(from.Sub(r.clock.Now()))
	code, err = callChatURL(c, srv.URL)
	require.NoError(t, err, "a retry at the time the refusal named")
	assert.Equal(t, http.StatusOK, code)
}

// A half-open circuit whose probes are out says when the next goes at the
// latest: when those probes are given up for lost, a cool-down after the
// last was sent. It said nothing of when to retry.
func TestBreakerHalfOpenRefusalNamesWhenTheNextProbeGoesAtTheLatest(t *testing.T) {
	r, _, status, release, post := openedWithOneProbe(t)
	status.Store(0) // streams, held open
	r.clock.Advance(time.Minute)
	probe, err := post()
	require.NoError(t, err)
	defer func() { close(release); probe.Body.Close() }()
	r.clock.Advance(10 * time.Second)

	_, err = post()
	require.ErrorIs(t, err, ErrCircuitOpen)
	assert.Contains(t, err.Error(), "half-open, its probes are out; probes from 2026-11-25T12:02:00Z at the latest", "a cool-down after the probe went")
}
