package bench

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

// upstream is a loopback server that counts the requests and connections
// it receives.
type upstream struct {
	*httptest.Server
	hits, conns atomic.Int64
}

func newUpstream(t testing.TB, handle http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		io.Copy(io.Discard, r.Body)
		handle(w, r)
	}))
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

const chatCompletion = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"deepseek-v3.2",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`

func answer(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, chatCompletion)
}

func unavailable(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `{"error":{"message":"upstream overloaded","type":"server_error"}}`)
}

// loopbackTransport returns a fresh transport whose idle connections are
// closed when the test ends.
func loopbackTransport(t testing.TB) *http.Transport {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// send makes n sequential calls through rt to u, as an SDK would, reading
// and closing every response, and returns how many ended in a 200.
func send(t testing.TB, rt http.RoundTripper, u *upstream, n int) (ok int) {
	c := &http.Client{Transport: rt}
	for range n {
		resp, err := c.Do(newChatRequest(t, u.URL+"/v1/chat/completions"))
		if err != nil {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && string(body) == chatCompletion {
			ok++
		}
	}
	return ok
}

const logicalRequests = 1000

// Into a full outage, each peer sends its 4 attempts for every call; the
// Retrier's budget stops retrying after the first few failures, so the
// outage costs the server about one request per call. When the provider
// recovers, to 10% random 503s, the Retrier's retries come back by
// themselves.
func TestOutageAmplification(t *testing.T) {
	var mu sync.Mutex
	perCall, served := map[string]float64{}, map[string]float64{}
	t.Run("peers", func(t *testing.T) {
		for _, p := range peers {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel() // mostly waits: 1ms before each retry
				var down atomic.Bool
				down.Store(true)
				u := newUpstream(t, seeded503(0.10, &down))
				rt := p.wrap(t, loopbackTransport(t))
				send(t, rt, u, logicalRequests)
				outage := float64(u.hits.Swap(0)) / logicalRequests
				down.Store(false)
				ok := float64(send(t, rt, u, logicalRequests)) / logicalRequests
				t.Logf("%s: %d calls into a full outage: %.3f requests per call; then, at 10%% faults, %.1f%% of %d calls served with %.3f requests per call",
					p.name, logicalRequests, outage, 100*ok, logicalRequests, float64(u.hits.Load())/logicalRequests)
				mu.Lock()
				perCall[p.name], served[p.name] = outage, ok
				mu.Unlock()
			})
		}
	})
	assert.LessOrEqual(t, perCall["httpguard"], 1.1)
	assert.Equal(t, 4.0, perCall["retryablehttp"], "3 retries configured")
	assert.Equal(t, 4.0, perCall["failsafehttp"], "3 retries configured")
	assert.GreaterOrEqual(t, served["httpguard"], 0.995, "the retries came back")
}

// BenchmarkOutage reports requests seen by the server per call into a full
// outage (requests/call) for each peer.
func BenchmarkOutage(b *testing.B) {
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) {
			u := newUpstream(b, unavailable)
			rt := p.wrap(b, loopbackTransport(b))
			b.ResetTimer()
			send(b, rt, u, b.N)
			b.ReportMetric(float64(u.hits.Load())/float64(b.N), "requests/call")
		})
	}
}

// How many connections an outage costs. The Retrier drains the responses it
// retries and hands back the last, so one connection serves the whole
// outage. go-retryablehttp drains too, but each time it gives up it calls
// CloseIdleConnections on its transport (client.go, Do), so every call
// opens a new connection and tears down everyone else's idle ones.
// failsafehttp, used as its documentation shows (no drainRetried hook),
// never reads or closes the responses it retries, so each retry opens a new
// connection and the old ones stay busy until the server closes them.
func TestConnectionsPerCallOnOutage(t *testing.T) {
	const calls = 50
	for _, c := range []struct {
		peer
		conns int64
	}{
		{peers[0], 1},
		{peers[1], calls},
		{peer{"failsafehttp (no drain hook)", func(t testing.TB, base http.RoundTripper) http.RoundTripper {
			return failsafeHTTPWith(keepBodies(t, base), nil)
		}}, 1 + retries*calls},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, unavailable)
			send(t, c.wrap(t, loopbackTransport(t)), u, calls)
			t.Logf("%s: %d calls, %d requests, %d connections: %.2f connections per call",
				c.name, calls, u.hits.Load(), u.conns.Load(), float64(u.conns.Load())/calls)
			assert.Equal(t, c.conns, u.conns.Load())
		})
	}
}

// keepBodies records the body of every response base returns and closes
// them all when the test ends: the responses failsafehttp leaves unclosed
// would otherwise hold their connections' goroutines for ever.
func keepBodies(t testing.TB, base http.RoundTripper) http.RoundTripper {
	var mu sync.Mutex
	var bodies []io.Closer
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bodies {
			b.Close()
		}
	})
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := base.RoundTrip(r)
		if resp != nil {
			mu.Lock()
			bodies = append(bodies, resp.Body)
			mu.Unlock()
		}
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
