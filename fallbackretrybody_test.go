package httpguard

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Retrier below a Fallback sends its retries with GetBody copies, and
// returns its last attempt's early answer while the transport below still
// reads that copy (net/http writes a body after an early 503). With a
// GetBody that rewinds a shared reader (openai-go's, anthropic-sdk-go's),
// the next target's GetBody must wait for that copy too, not only for the
// Body the Fallback passed down, which the first attempt closed long ago:
// else both read the one reader, and the next target gets a torn body.
func TestFallbackWaitsForTheBodyOfTheRetriersLastAttempt(t *testing.T) {
	f, err := NewFallback(FallbackConfig{Targets: []Target{{Name: "a", BaseURL: "http://a.test/v1"}, {Name: "b", BaseURL: "http://b.test/v1"}}})
	require.NoError(t, err)
	retrier, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond})
	require.NoError(t, err)
	const body = `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	var attempts, held atomic.Int32 // the primary's attempts, and its bodies still read
	release := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var heldAtSecond int32 = -1
	var second string
	rt := Chain(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "b.test" {
			heldAtSecond = held.Load()
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			second = string(b)
			return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
		}
		if attempts.Add(1) == 1 { // read whole: the retry goes at once
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		} else { // answered early, the body written on after the answer
			held.Add(1)
			io.ReadFull(r.Body, make([]byte, 4))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-release
				io.Copy(io.Discard, r.Body)
				held.Add(-1)
				r.Body.Close()
			}()
		}
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
	}), f, retrier)
	req := sharedReaderRequest(t, "http://a.test/v1/chat/completions", body)

	done := make(chan struct{})
	var resp *http.Response
	go func() { defer close(done); resp, err = rt.RoundTrip(req) }()
	select {
	case <-done:
	case <-time.After(50 * time.Millisecond): // waiting, as it should
	}
	close(release)
	<-done

	require.NoError(t, err)
	assert.Equal(t, "b", resp.Header.Get(TargetHeader))
	assert.EqualValues(t, 2, attempts.Load())
	assert.Zero(t, heldAtSecond, "the next target's GetBody ran while the primary's last attempt was still read")
	assert.Equal(t, body, second)
}
