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

// closeRecorder is a request body that records its Close.
type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error { c.closed.Store(true); return nil }

// A hook that panics when the cool-down ends, on the goroutine of the
// request that turned the circuit half-open, loses that request: its probe
// slot goes back, so that the next request probes at once rather than be
// refused for a whole cool-down, and its body is closed, as a RoundTripper
// must close it even on failure.
func TestBreakerHookPanicOnHalfOpenGivesItsProbeSlotBack(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, `{}`)
	})
	clock := newFakeClock(moveOn)
	b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 1,
		OnStateChange: func(e BreakerEvent) {
			if e.To == CircuitHalfOpen {
				panic("hook")
			}
		}})
	require.NoError(t, err)
	b.now = clock.Now
	c := clientFor(t, b)
	code, err := callChatURL(c, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, code)
	s, _ := b.StatsOf(strings.TrimPrefix(srv.URL, "http://") + " m")
	require.Equal(t, CircuitOpen, s.State)

	clock.Advance(time.Minute)
	status.Store(http.StatusOK)
	body := &closeRecorder{Reader: strings.NewReader(chatBody("m", 16))}
	req, err := http.NewRequest("POST", srv.URL+"/v1/chat/completions", body)
	require.NoError(t, err)
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(chatBody("m", 16))), nil }
	assert.PanicsWithValue(t, "hook", func() { b.Wrap(http.DefaultTransport).RoundTrip(req) })
	assert.True(t, body.closed.Load(), "the request body is closed")

	code, err = callChatURL(c, srv.URL)
	require.NoError(t, err, "the probe the panic lost holds no slot")
	assert.Equal(t, http.StatusOK, code)
	s, _ = b.StatsOf(strings.TrimPrefix(srv.URL, "http://") + " m")
	assert.Equal(t, CircuitClosed, s.State)
	assert.EqualValues(t, 2, srv.hits.Load(), "the failure and the probe: the lost request was not sent")
}

// callChatURL posts a chat request for model m below base and reads the
// answer; it returns the status, or the error.
func callChatURL(c *http.Client, base string) (int, error) {
	resp, err := c.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}
