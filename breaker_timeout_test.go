package httpguard

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// http.Client's *url.Error asks only the error it wraps directly whether
// it is a timeout. The error of an attempt whose failure opened the
// circuit is marked for the Retrier (openedCircuit); without a Retrier
// above (Chain(base, breaker), or a Fallback right above the Breaker),
// that mark reaches the caller, and must not turn a timeout into
// something else for err.(net.Error).Timeout() or os.IsTimeout.
func TestBreakerKeepsTheTimeoutOfTheAttemptThatOpenedTheCircuit(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select { // no headers: the client's ResponseHeaderTimeout ends the attempt
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
	tr := &http.Transport{ResponseHeaderTimeout: 20 * time.Millisecond}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: Chain(tr, r.b)}

	_, err := c.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))

	require.Error(t, err)
	require.Equal(t, CircuitOpen, r.stats(t).State, "the timeout opened the circuit")
	var ne net.Error
	require.True(t, errors.As(err, &ne))
	assert.True(t, ne.Timeout(), "%v", err)
}
