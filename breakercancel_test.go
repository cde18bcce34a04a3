package httpguard

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// net/http still honours Request.Cancel, the channel that cancelled a
// request before contexts did (deprecated, but kept by older code): a
// request whose Cancel is closed fails with "net/http: request canceled".
// The Breaker read that error as the provider's failure: three such calls
// to a healthy server opened its circuit (ConsecutiveFailures 3), and the
// next caller's request was refused unsent. A caller's own cancellation,
// by its Cancel as by its context, says nothing of the provider.
func TestBreakerIgnoresACallCancelledByItsCancelChannel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	b, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 3})
	require.NoError(t, err)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: Chain(tr, b)}
	for range 5 {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(writeOnceBody))
		require.NoError(t, err)
		cancel := make(chan struct{})
		close(cancel)
		req.Cancel = cancel //nolint:staticcheck // what older callers do
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		assert.False(t, errors.Is(err, ErrCircuitOpen), "%v", err)
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err, "a caller's cancellations opened the circuit")
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	for _, st := range b.Stats() {
		assert.Zero(t, st.Opens, "%s", st.Key)
		assert.Zero(t, st.ConsecutiveFailures, "%s", st.Key)
	}
}

// The Retrier read the error of a request whose Cancel channel was closed
// as a transport failure, and sent it again and again (four attempts
// under MaxRetries 3, some of which reached the server before net/http
// saw the channel): the caller's own end, as by its context, is not
// retried.
func TestRetrierDoesNotRetryACallCancelledByItsCancelChannel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	r, err := NewRetrier(fastRetries)
	require.NoError(t, err)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: Chain(tr, r)}
	for range 20 {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(writeOnceBody))
		require.NoError(t, err)
		cancel := make(chan struct{})
		close(cancel)
		req.Cancel = cancel //nolint:staticcheck // what older callers do
		resp, err := client.Do(req)
		if err == nil { // net/http may not see the channel in time
			resp.Body.Close()
			continue
		}
		var re *RetryError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 1, re.Attempts, "%v", err)
	}
}
