package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller that stops reading an answer by closing its body while another
// goroutine's Read waits (a "stop" button, a context watcher) said nothing
// of the provider: the Read that Close ends fails, over HTTP/2 before Close
// returns, and the Breaker counted that error as the body breaking off.
// Closed twenty times in a row, a healthy provider's circuit opened.
func TestBreakerCountsNothingForABodyClosedWhileAnotherGoroutineReadsIt(t *testing.T) {
	for _, contentType := range []string{"text/event-stream", "application/json"} {
		t.Run(contentType, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", contentType)
				io.WriteString(w, "data: {\"choices\":[]}\n\n")
				w.(http.Flusher).Flush()
				<-r.Context().Done() // until the caller closes the body
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			t.Cleanup(srv.Close)
			br := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 20})
			c := &http.Client{Transport: br.b.Wrap(srv.Client().Transport)}

			for i := range 20 {
				resp, err := c.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
				require.NoError(t, err, "call %d", i)
				require.Equal(t, "HTTP/2.0", resp.Proto)
				buf := make([]byte, 1024)
				_, err = resp.Body.Read(buf)
				require.NoError(t, err)
				read := make(chan struct{})
				go func() { // waits for the bytes that do not come
					defer close(read)
					resp.Body.Read(buf)
				}()
				resp.Body.Close()
				<-read
			}

			s := br.stats(t)
			assert.Equal(t, CircuitClosed, s.State)
			assert.Zero(t, s.Failures)
			assert.Zero(t, s.ConsecutiveFailures)
			assert.Empty(t, br.transitions())
		})
	}
}
