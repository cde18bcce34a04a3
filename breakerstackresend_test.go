package httpguard

import (
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A server may turn a stream away before it read any of it: it resets it
// with REFUSED_STREAM, or its GOAWAY names a last stream below it. Nothing
// was processed, and net/http's HTTP/2 transport sends the request again
// at once, from GetBody. Under the full stack, Retrier → Breaker → Budget
// → Limiter, that resend failed: the Retrier's gate took the Budget's read
// of the Body, to price it, for the Body sent, so the attempt ended in an
// error (errSentBelow) that the Breaker counted as a failure of the
// provider's (one refused stream opened a circuit of ConsecutiveFailures 1
// and the call failed; under the default 5 the Retrier sent it again after
// its backoff, 1s here), where without the Breaker the same stream cost
// nothing. The Budget below, which sends a priced attempt once by what
// net/http's trace says was written, now gates it in both stacks.
func TestFullStackSendsAStreamTurnedAwayUnreadAgainAtOnce(t *testing.T) {
	for _, fault := range []string{"REFUSED_STREAM", "GOAWAY"} {
		for _, breaker := range []bool{false, true} {
			for _, sdk := range []bool{false, true} {
				name := fault + "/retrier+budget+limiter"
				if breaker {
					name = fault + "/retrier+breaker+budget+limiter"
				}
				if sdk {
					name += "/GetBody rewinding the Body's reader"
				}
				t.Run(name, func(t *testing.T) { testStreamTurnedAwayUnread(t, fault, breaker, sdk) })
			}
		}
	}
}

func testStreamTurnedAwayUnread(t *testing.T, fault string, breaker, sdk bool) {
	// httptest's certificate and a client trusting it; the server is
	// h2Stall, which gives new streams no window until told to.
	hs := httptest.NewUnstartedServer(http.NotFoundHandler())
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	cfg := hs.TLS.Clone()
	cfg.NextProtos = []string{"h2"}
	srv := newH2StallTLS(t, func(b []byte) Money { return reservation(string(b), 5) }, cfg)
	srv.autoWindow.Store(false)
	tr := hs.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	// A connection first, whose SETTINGS the client has before the POST:
	// the POST's body waits for a window, which the first stream never gets.
	warm, err := http.NewRequest(http.MethodGet, srv.URL()+"/v1/models", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(warm)
	require.NoError(t, err)
	resp.Body.Close()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for first := true; ; first = false {
			var stream uint32
			select {
			case stream = <-srv.heads:
			case <-done:
				return
			}
			switch {
			case !first:
				srv.window(stream, 1<<20)
			case fault == "REFUSED_STREAM":
				srv.write(3, 0, stream, []byte{0, 0, 0, 7})
			default: // GOAWAY, NO_ERROR, its last stream the one before
				var p [8]byte
				binary.BigEndian.PutUint32(p[:4], stream-2)
				srv.write(7, 0, 0, p[:])
			}
		}
	}()

	p := RetryPolicy{MaxRetries: 3, BaseDelay: time.Second, MaxDelay: time.Second}
	r, sl := newTestRetrier(t, p)
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(writeOnceBody, 5)})
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
	require.NoError(t, err)
	br, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 1})
	require.NoError(t, err)
	layers := []Layer{r, b, l}
	if breaker {
		layers = []Layer{r, br, b, l}
	}
	client := &http.Client{Transport: Chain(tr, layers...), Timeout: 10 * time.Second}

	req, err := http.NewRequest(http.MethodPost, srv.URL()+"/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	if sdk { // as openai-go's and anthropic-sdk-go's
		req = sharedReaderRequest(t, srv.URL()+"/v1/chat/completions", writeOnceBody)
	}
	resp, err = client.Do(req)

	require.NoError(t, err, "net/http sent the stream turned away again")
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), `"usage"`)
	assert.Empty(t, sl.all(), "no retry of the Retrier's, nor its wait")
	for _, s := range br.Stats() {
		assert.Zero(t, s.Failures, "a stream turned away unread is no failure of the provider's: %+v", s)
	}
	tr.CloseIdleConnections()
	assert.Equal(t, reservation(writeOnceBody, 5), Money(srv.billed.Load()), "the server read the request once")
	assert.Equal(t, Money(srv.billed.Load()), b.Spent(), "the stream turned away unread is released")
}
