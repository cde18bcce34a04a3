package httpguard

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A server that retires a connection (nginx after keepalive_requests,
// 1,000 by default) sends a GOAWAY naming the last stream it processed;
// the streams after it, in flight, net/http sends again on a new
// connection. The Budget lets that resend go on a second reservation of
// the attempt (see holdAgain): every call succeeds and no Breaker counts a
// failure, where the resend refused made an error of each stream turned
// away (1 call of 8 served, a circuit opened on a healthy provider). The
// streams turned away are charged in full: the server says it did not
// process them, but one that lies may have billed them.
func TestBudgetLetsNetHTTPSendAgainTheStreamsOfARetiredConnection(t *testing.T) {
	for _, c := range []struct{ withBreaker, shared bool }{{false, false}, {true, false}, {true, true}} {
		withBreaker := c.withBreaker
		t.Run(fmt.Sprintf("breaker=%v/shared=%v", c.withBreaker, c.shared), func(t *testing.T) {
			const n = 8
			s, tr := newRotatingServer(t, n, 1)
			warm, err := http.NewRequest(http.MethodGet, s.URL()+"/v1/models", nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(warm) // one connection, which the calls share
			require.NoError(t, err)
			resp.Body.Close()
			r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Minute, MaxDelay: time.Minute})
			require.NoError(t, err)
			limit := 100 * reservation(writeOnceBody, 5)
			cfg := BudgetConfig{Limit: limit}
			if c.shared { // as a shared store is used: each reservation named, under a lease
				cfg.Store, cfg.Lease = NewMemoryBudgetStore(), time.Minute
			}
			b := newTestBudget(t, cfg)
			l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
			require.NoError(t, err)
			br, err := NewBreaker(BreakerConfig{})
			require.NoError(t, err)
			layers := []Layer{r, b, l}
			if withBreaker {
				layers = []Layer{r, br, b, l}
			}
			client := &http.Client{Transport: Chain(tr, layers...), Timeout: 10 * time.Second}
			var wg sync.WaitGroup
			var served atomic.Int64
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					status, err := callReadable(context.Background(), client, s.URL(), writeOnceBody)
					if assert.NoError(t, err) && assert.Equal(t, http.StatusOK, status) {
						served.Add(1)
					}
				}()
			}
			wg.Wait()
			assert.EqualValues(t, n, served.Load(), "every call served, no retry of the Retrier's (a minute away)")
			for _, st := range br.Stats() {
				assert.Zero(t, st.Failures, "no failure of the provider's: %+v", st)
				assert.Zero(t, st.Opens)
			}
			billed := Money(s.billed.Load())
			t.Logf("reads %d, billed %v, charged %v", s.reads.Load(), billed, b.Spent())
			assert.LessOrEqual(t, billed, b.Spent(), "every write charged")
			assert.LessOrEqual(t, b.Spent(), limit)
			_, held, ok := b.totals()
			require.True(t, ok)
			assert.Zero(t, held, "every hold settled, the second ones too")
		})
	}
}

// rotatingServer serves HTTP/2 over TLS frame by frame: on each
// connection it waits for the bodies of `wait` streams, answers the first
// `keep` of them (by stream ID) and sends a GOAWAY naming the last it
// answers, ignoring the others (denied: never processed), as nginx does
// once keepalive_requests are served; later connections the same.
type rotatingServer struct {
	ln         net.Listener
	wait, keep int
	billed     atomic.Int64
	reads      atomic.Int64
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      []net.Conn
}

func newRotatingServer(t *testing.T, wait, keep int) (*rotatingServer, *http.Transport) {
	hs := httptest.NewUnstartedServer(http.NotFoundHandler())
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	cfg := hs.TLS.Clone()
	cfg.NextProtos = []string{"h2"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rotatingServer{ln: ln, wait: wait, keep: keep}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c = tls.Server(c, cfg)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c, n) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	tr := hs.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return s, tr
}

func (s *rotatingServer) URL() string { return "https://" + s.ln.Addr().String() }

func (s *rotatingServer) serve(c net.Conn, n int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	preface := make([]byte, 24)
	if _, err := io.ReadFull(r, preface); err != nil {
		return
	}
	write := func(typ, flags byte, stream uint32, p []byte) { h2Frame(c, typ, flags, stream, p) }
	write(4, 0, 0, nil)
	bodies := map[uint32][]byte{}
	var done []uint32
	wait := s.wait
	if n > 0 {
		wait = 1 // later connections serve at once
	}
	answered := false
	for {
		typ, flags, stream, p, err := readH2Frame(r)
		if err != nil {
			return
		}
		switch typ {
		case 4:
			if flags&1 == 0 {
				write(4, 1, 0, nil)
			}
			continue
		case 6:
			if flags&1 == 0 {
				write(6, 1, 0, p)
			}
			continue
		case 1:
			bodies[stream] = []byte{}
			if flags&1 != 0 { // no body
				write(1, 5, stream, []byte{0x88})
				continue
			}
			continue
		case 0:
			bodies[stream] = append(bodies[stream], p...)
			if flags&1 == 0 {
				continue
			}
			done = append(done, stream)
		default:
			continue
		}
		if answered && n > 0 {
			body := bodies[stream]
			s.reads.Add(1)
			s.billed.Add(int64(reservation(string(body), 5)))
			write(1, 4, stream, []byte{0x88})
			write(0, 1, stream, fmt.Appendf(nil, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(body)))
			continue
		}
		if len(done) < wait || answered {
			continue
		}
		answered = true
		// The lowest streams: a GOAWAY's last stream says every stream
		// up to it may have been processed, which net/http then does not
		// send again.
		slices.Sort(done)
		var last uint32
		for _, st := range done[:min(s.keep, len(done))] {
			body := bodies[st]
			s.reads.Add(1)
			s.billed.Add(int64(reservation(string(body), 5)))
			write(1, 4, st, []byte{0x88})
			write(0, 1, st, fmt.Appendf(nil, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(body)))
			last = max(last, st)
		}
		if n == 0 {
			var g [8]byte
			binary.BigEndian.PutUint32(g[:4], last)
			write(7, 0, 0, g[:])
		}
	}
}
