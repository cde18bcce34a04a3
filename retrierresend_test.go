package httpguard

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// net/http sends a request without a body again on its own when its HTTP/2
// stream is reset with PROTOCOL_ERROR, on a new connection each time (the
// reset marks the connection not to be reused, and a request that finds
// no connection to reuse is sent again at once), without end and without
// a wait: a GET to a server that resets every stream (one that rejects a
// header of the request does) got a thousand requests a second, below a
// Retrier whose MaxRetries, waits and retry budget saw one attempt, until
// the caller's deadline; the AttemptTimeout, started again by each send,
// never fired. No GetBody is asked for such a request, so no gate can stop
// it there: the Retrier now ends an attempt once net/http begins to send it
// a third time, and retries it as any other transport error.
func TestRetrierBoundsNetHTTPResendsOfABodilessRequest(t *testing.T) {
	for _, c := range []struct {
		name    string
		tls     bool
		timeout time.Duration
	}{{"h2", true, 0}, {"h2/AttemptTimeout", true, 300 * time.Millisecond}, {"h2c", false, 0}} {
		t.Run(c.name, func(t *testing.T) {
			s := newH2Resetter(t, 1, 1_000_000, "", func([]byte) Money { return 0 }, "{}")
			url, tr := s.URL(), h2cTransport(t)
			if c.tls {
				url, tr = tlsFront(t, s.URL())
			}
			closeDialedConns(t, tr)
			const retries = 2
			p := fastRetries
			p.MaxRetries, p.AttemptTimeout = retries, c.timeout
			r, err := NewRetrier(p)
			require.NoError(t, err)
			client := &http.Client{Transport: Chain(tr, r)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/models", nil)
			require.NoError(t, err)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			t.Logf("err %v; the server got %d requests", err, s.reads.Load())
			require.Error(t, err)
			assert.NoError(t, ctx.Err(), "the call ended before the caller's deadline")
			var re *RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, retries+1, re.Attempts)
			assert.LessOrEqual(t, s.reads.Load(), int64(3*(retries+1)), "at most three sends an attempt")
		})
	}
}

// closeDialedConns closes, at the end of the test, every connection tr
// dialled: the one a cancelled send was dialling is made all the same,
// and kept. net/http may begin a dial after the call returned (for a send
// again that the layer stopped), even while the cleanup runs: a dial
// counted before the cleanup is waited for and its connection closed, and
// one begun after fails at once. Counting a dial in the WaitGroup while
// the cleanup waits on it was a data race (-race failed the test, one run
// in 100).
func closeDialedConns(t *testing.T, tr *http.Transport) {
	var dials sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	var over bool
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		if over {
			mu.Unlock()
			return nil, errors.New("the test is over")
		}
		dials.Add(1)
		mu.Unlock()
		defer dials.Done()
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	t.Cleanup(func() {
		mu.Lock()
		over = true
		mu.Unlock()
		dials.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
}
