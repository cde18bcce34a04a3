package httpguard

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freshServer is a raw HTTP/1.1 server on loopback that serves one request
// per connection: it answers it 200 with Connection: close, or, when drop
// says so for the n-th request (0-based), ends the connection with a TCP
// reset, unanswered. Every request goes on a new connection, so none of
// its resets is a kept-alive connection's race: what a client sees from a
// load balancer with a dead backend, or a server resetting new
// connections.
type freshServer struct {
	loopback
	drop              func(n int64) bool
	n                 atomic.Int64
	answered, dropped atomic.Int64
}

func newFreshServer(t testing.TB, drop func(n int64) bool) *freshServer {
	t.Helper()
	s := &freshServer{loopback: listenLoopback(t), drop: drop}
	serveEach(t, s.ln, s.serve)
	return s
}

func (s *freshServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	io.Copy(io.Discard, req.Body)
	if s.drop(s.n.Add(1) - 1) {
		s.dropped.Add(1)
		c.(*net.TCPConn).SetLinger(0)
		return
	}
	s.answered.Add(1)
	answer := `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":5}}`
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
}

func (s *freshServer) chatPost(t testing.TB) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(chatBody("m", 5)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// A provider half of whose new connections are reset (a load balancer
// with one of two backends dead, taking turns; or at random) fails half
// its attempts: the Breaker opens on it as it does on one answering half
// its attempts 503 ("at half, the ratio opens it"), within its
// RatioWindow. A rule tried and dropped (623e08c: a connection lost
// unanswered right after a success counts only once a failure follows, to
// spare a server's idle-timeout race) dropped every reset of the
// turn-taking provider (it never opened), and about one in six of a
// random one's: at 50% random resets over 20 seeds of 100 attempts it
// opened in 12 runs, against 18 (45%: 8 against 13; 55%: 18 against 20).
func TestBreakerOpensOnAProviderResettingHalfItsNewConnections(t *testing.T) {
	for _, c := range []struct {
		name string
		drop func() func(int64) bool
	}{
		{"taking turns", func() func(int64) bool { return func(n int64) bool { return n%2 == 1 } }},
		{"55% at random", func() func(int64) bool {
			rng := rand.New(rand.NewPCG(55, 55))
			var mu sync.Mutex
			return func(int64) bool { mu.Lock(); defer mu.Unlock(); return rng.Float64() < 0.55 }
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newFreshServer(t, c.drop())
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			br, err := NewBreaker(BreakerConfig{})
			require.NoError(t, err)
			now := time.Unix(1_800_000_000, 0)
			br.now = func() time.Time { return now }
			client := &http.Client{Transport: Chain(tr, br)}
			refused := 0
			for range 200 {
				now = now.Add(100 * time.Millisecond) // 20 s: all in one RatioWindow
				if _, err := call(t, client, s.chatPost(t)); IsRefusal(err) {
					refused++
				}
			}
			st := br.Stats()
			require.Len(t, st, 1)
			t.Logf("%d answered, %d reset, %d refused; opens %d", s.answered.Load(), s.dropped.Load(), refused, st[0].Opens)
			assert.NotZero(t, st[0].Opens, "the circuit opened")
		})
	}
}

// Into an outage that resets every new connection, the retry budget keeps
// the whole of 1,000 calls under 1.1 requests per call, with 50 callers at
// once and with MaxRetries 5 too. A first attempt so lost counts neither
// way in the budget (it may be a kept-alive connection's race; the Retrier
// does not ask net/http whether the connection was reused, which would
// cost every attempt a trace), so the outage's onset costs more than for
// 503s (1.022 sequential, 1.027 with 50 callers): 1.045, and 1.064 to 1.068.
func TestRetryBudgetIntoAnOutageResettingEveryNewConnection(t *testing.T) {
	for _, c := range []struct {
		name       string
		callers    int
		maxRetries int
	}{{"sequential", 1, 3}, {"50 callers", 50, 3}, {"MaxRetries 5", 1, 5}, {"50 callers, MaxRetries 5", 50, 5}} {
		t.Run(c.name, func(t *testing.T) {
			s := newFreshServer(t, func(int64) bool { return true })
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			p := DefaultRetryPolicy()
			p.MaxRetries = c.maxRetries
			r, _ := newTestRetrier(t, p)
			client := &http.Client{Transport: Chain(tr, r)}
			const calls = 1000
			var wg sync.WaitGroup
			var started atomic.Int64
			for range c.callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for started.Add(1) <= calls {
						call(t, client, s.chatPost(t))
					}
				}()
			}
			wg.Wait()
			perCall := float64(s.dropped.Load()) / calls
			t.Logf("%d calls: %.3f requests per call", calls, perCall)
			assert.LessOrEqual(t, perCall, 1.1)
		})
	}
}
