package httpguard

// Bugs found by the adversarial review of the Retrier and the Limiter
// (2026-11-30); each test failed before its fix.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A JSON body whose length differs from its ContentLength is refused by
// the Limiter, as net/http and the other layers refuse it: without GetBody
// rather than sent whole under a ContentLength the Limiter rewrote, and
// (was a bug) with GetBody, whose copy it read for the model and tokens
// without checking its length, rather than handed to net/http, which
// writes the declared bytes before it finds extra ones: a server can run a
// longer body so cut.
func TestLimiterRefusesABodyNotAsLongAsDeclared(t *testing.T) {
	body := `{"model":"m","max_tokens":1}`
	for name, reader := range map[string]func() io.Reader{
		"without GetBody": func() io.Reader { return io.NopCloser(strings.NewReader(body)) },
		"with GetBody":    func() io.Reader { return strings.NewReader(body) },
	} {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock(moveOn)
			l := newTestLimiter(t, LimitConfig{}, clk)
			srv, client, arrived := newLimitedServer(t, l, clk, nil)
			for _, cl := range []int64{5, int64(len(body)) - 1, int64(len(body)) + 5} {
				req, err := http.NewRequest(http.MethodPost, srv.URL, reader())
				require.NoError(t, err)
				require.Equal(t, name == "with GetBody", req.GetBody != nil)
				req.ContentLength = cl
				resp, err := client.Do(req)
				if resp != nil {
					resp.Body.Close()
				}
				require.Error(t, err, "ContentLength %d", cl)
				assert.Contains(t, err.Error(), "ContentLength=", "ContentLength %d", cl)
				assert.True(t, IsRefusal(err), "ContentLength %d: nothing was sent", cl)
			}
			assert.Zero(t, arrived.n.Load(), "the server received no request")
		})
	}
}

// Requests refused because the queue is too long read the key's rate and
// pause under the key's lock, while other requests move the rate along its
// recovery curve (go test -race).
func TestLimiterRefusalsReadTheKeyUnderItsLock(t *testing.T) {
	// The real clock: the fake one's mutex would order the goroutines.
	// After the 429 the key refuses, and adapts, for many seconds.
	l, lerr := NewLimiter(LimitConfig{RequestsPerSecond: 0.1, Burst: 1, MaxWait: -1,
		Adaptive: AdaptiveConfig{RecoveryScale: 1e-6, MinRequestsPerSecond: 0.01}})
	require.NoError(t, lerr)
	srv, client, _ := newLimitedServer(t, l, newFakeClock(moveOn), func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusTooManyRequests) // the key adapts: its rate moves on every turn
		}
	})
	status, err := getStatus(t, context.Background(), client, srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, status)
	// No testing.T in the loop: its mutex would order the goroutines.
	rt := client.Transport
	refused := make([]int, 8)
	var wg sync.WaitGroup
	for g := range refused {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
				resp, err := rt.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				if errors.Is(err, ErrRateLimited) {
					refused[g]++
				}
			}
		}()
	}
	wg.Wait()
	for g, n := range refused {
		assert.Equal(t, 200, n, "goroutine %d", g)
	}
}
