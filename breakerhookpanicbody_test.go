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

// closeCounting is a base transport whose answers' bodies count their
// Close.
type closeCounting struct {
	next   http.RoundTripper
	closed atomic.Int32
	bodies atomic.Int32
}

type closeCountedBody struct {
	io.ReadCloser
	t *closeCounting
}

func (b *closeCountedBody) Close() error { b.t.closed.Add(1); return b.ReadCloser.Close() }

func (t *closeCounting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.bodies.Add(1)
		resp.Body = &closeCountedBody{resp.Body, t}
	}
	return resp, err
}

// A hook that panics (an http.Server recovers a handler's panic) when an
// answer changes its circuit loses that answer, which the caller never
// sees: its body is closed, as a RoundTripper's is on every early return,
// so that its connection is not held for good. A 503 that opened the
// circuit and a probe's answer closed before its end, which closed it,
// kept their connections open and their bodies unclosed.
func TestBreakerHookPanicClosesTheAnswerItLoses(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, `{"id":"x"}`)
	})
	clock := newFakeClock(moveOn)
	b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, CoolDown: time.Minute, Probes: 1,
		OnStateChange: func(e BreakerEvent) {
			if e.To != CircuitHalfOpen {
				panic("hook")
			}
		}})
	require.NoError(t, err)
	b.now = clock.Now
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	base := &closeCounting{next: tr}
	rt := b.Wrap(base)
	post := func() *http.Request {
		req, err := http.NewRequest("POST", srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 16)))
		require.NoError(t, err)
		return req
	}

	assert.PanicsWithValue(t, "hook", func() { rt.RoundTrip(post()) }, "the 503 opens the circuit")
	assert.EqualValues(t, 1, base.closed.Load(), "the 503's body is closed")

	clock.Advance(time.Minute)
	status.Store(http.StatusOK)
	resp, err := rt.RoundTrip(post())
	require.NoError(t, err)
	assert.PanicsWithValue(t, "hook", func() { resp.Body.Close() }, "the probe's success closes the circuit")
	assert.EqualValues(t, 2, base.closed.Load(), "the probe's body is closed")
	assert.EqualValues(t, 2, base.bodies.Load())
}
