package httpguard

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2Billing is an httptest server speaking HTTP/2 over TLS that bills
// every request body it reads whole (its reservation at testPrices with
// max_tokens 5) and then does what fault says with the request (i counts
// the bodies read whole before it); a nil fault answers a 200 whose usage
// is the body's.
type h2Billing struct {
	srv    *httptest.Server
	reads  atomic.Int64
	billed atomic.Int64
	fault  func(s *h2Billing, w http.ResponseWriter, r *http.Request, body []byte, i int64)
}

func newH2Billing(t *testing.T, fault func(s *h2Billing, w http.ResponseWriter, r *http.Request, body []byte, i int64)) *h2Billing {
	t.Helper()
	s := unstartedH2Billing(fault)
	s.start(t)
	return s
}

// unstartedH2Billing is newH2Billing's server before it starts, for a test
// to configure it first.
func unstartedH2Billing(fault func(s *h2Billing, w http.ResponseWriter, r *http.Request, body []byte, i int64)) *h2Billing {
	s := &h2Billing{fault: fault}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // not read whole: not billed
		}
		i := s.reads.Add(1) - 1
		// A stream's include_usage, which the Budget adds, asks for no
		// tokens of the model: the provider bills the request as sent.
		s.billed.Add(int64(reservation(strings.Replace(string(b), `"stream_options":{"include_usage":true},`, "", 1), 5)))
		if s.fault != nil {
			s.fault(s, w, r, b, i)
			return
		}
		answerBodyUsage(w, b)
	}))
	s.srv.EnableHTTP2 = true
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	return s
}

func (s *h2Billing) start(t *testing.T) {
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
}

func answerBodyUsage(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(b))
}

// transport is the client transport httptest made, a copy of it.
func (s *h2Billing) transport(t *testing.T) *http.Transport {
	tr := s.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// h2Stack is the recommended stack, Retrier → Budget → Limiter, over tr.
func h2Stack(t *testing.T, tr http.RoundTripper, limit Money, p RetryPolicy) (*Budget, *http.Client) {
	t.Helper()
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	r, err := NewRetrier(p)
	require.NoError(t, err)
	l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
	require.NoError(t, err)
	return b, &http.Client{Transport: Chain(tr, r, b, l), Timeout: 20 * time.Second}
}

// callReadable posts body and reads the answer whole: it returns the
// error of the call or of the read, and the status (0 without response).
func callReadable(ctx context.Context, client *http.Client, url, body string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return resp.StatusCode, err
}

var fastRetries = RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}

// Faults an HTTP/2 server meets after it read a request whole and billed
// it: every write it read is charged, and the money billed stays within
// the Limit, over TLS as providers serve it.
func TestH2StackChargesEveryBilledAttemptAcrossFaults(t *testing.T) {
	const stream = `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	for _, c := range []struct {
		name  string
		body  string
		fault func(s *h2Billing, w http.ResponseWriter, r *http.Request, body []byte, i int64)
	}{
		{"RST_STREAM before headers", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			panic(http.ErrAbortHandler)
		}},
		{"RST_STREAM after headers", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		{"RST_STREAM mid-body", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			io.WriteString(w, `{"choices":[{"message":{"content":"hel`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		{"SSE cut by RST_STREAM", stream, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		{"connection cut after the body was read", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			s.srv.CloseClientConnections()
			<-r.Context().Done()
		}},
		{"GOAWAY (Shutdown) after the body was read, then RST_STREAM", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			if i == 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				go func() { defer cancel(); s.srv.Config.Shutdown(ctx) }()
				time.Sleep(10 * time.Millisecond) // the GOAWAY goes out first
			}
			panic(http.ErrAbortHandler)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newH2Billing(t, c.fault)
			limit := 3 * reservation(c.body, 5) * 3 / 2 // include_usage lengthens a stream's body
			b, client := h2Stack(t, srv.transport(t), limit, fastRetries)
			for range 3 {
				_, err := callReadable(context.Background(), client, srv.srv.URL, c.body)
				t.Logf("err %v", err)
			}
			srv.srv.Close() // every handler ended
			t.Logf("the server read %d bodies whole; billed %v, charged %v, limit %v", srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
			assert.Positive(t, srv.reads.Load())
			assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write the server read whole charged")
			assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
			_, held, err := b.Totals(context.Background())
			require.NoError(t, err)
			assert.Zero(t, held, "nothing stays reserved")
		})
	}
}

// Many streams in flight on one HTTP/2 connection when it dies, each read
// whole by the server: each attempt is charged its reservation.
func TestH2StackChargesEveryStreamOfAConnectionThatDied(t *testing.T) {
	const n = 8
	var arrived sync.WaitGroup
	arrived.Add(n)
	srv := newH2Billing(t, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
		if i < n {
			arrived.Done()
			if i == n-1 {
				arrived.Wait()
				s.srv.CloseClientConnections()
			}
			<-r.Context().Done()
			return
		}
		answerBodyUsage(w, b)
	})
	tr := srv.transport(t)
	limit := n * reservation(writeOnceBody, 5) * 3 / 2 // room for n attempts and a few retries
	b, client := h2Stack(t, tr, limit, fastRetries)
	// One connection first, which the n streams share.
	warm, err := http.NewRequest(http.MethodGet, srv.srv.URL+"/v1/models", nil)
	require.NoError(t, err)
	resp, err := client.Do(warm)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)

	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := callReadable(context.Background(), client, srv.srv.URL, writeOnceBody)
			if err != nil {
				t.Logf("err %v", err)
			}
		}()
	}
	wg.Wait()
	srv.srv.Close()
	t.Logf("the server read %d bodies whole; billed %v, charged %v, limit %v", srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
	assert.GreaterOrEqual(t, srv.reads.Load(), int64(n))
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write the server read whole charged")
	assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
}

// A server that reads a request whole and never answers: the Retrier's
// AttemptTimeout ends each attempt, each charged; nothing hangs.
func TestH2StackAttemptTimeoutChargesEachAttempt(t *testing.T) {
	srv := newH2Billing(t, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
		<-r.Context().Done()
	})
	limit := 10 * reservation(writeOnceBody, 5)
	p := fastRetries
	p.AttemptTimeout = 50 * time.Millisecond
	b, client := h2Stack(t, srv.transport(t), limit, p)
	start := time.Now()
	_, err := callReadable(context.Background(), client, srv.srv.URL, writeOnceBody)
	require.ErrorIs(t, err, ErrAttemptTimeout)
	assert.Less(t, time.Since(start), 5*time.Second)
	srv.srv.Close()
	t.Logf("the server read %d bodies whole; billed %v, charged %v, limit %v", srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
	assert.Equal(t, int64(4), srv.reads.Load())
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write the server read whole charged")
}

// A server that stops reading the request body (flow control stalls the
// write): the AttemptTimeout, which does not bound the write, does not cut
// it; the caller's deadline ends it; nothing hangs, nothing is held.
func TestH2StackFlowControlStallEnds(t *testing.T) {
	srv := unstartedH2Billing(nil)
	srv.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			return
		}
		<-r.Context().Done() // reads nothing
	})
	// Each stream gets a flow-control window of 16 KiB, so a body of
	// 256 KiB stalls. The body is kept small because the Budget prices it
	// inside the attempt, under its AttemptTimeout: a 3 MiB body took
	// longer than 700ms to price under -race on a loaded machine.
	srv.srv.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10}
	srv.start(t)
	body := fmt.Sprintf(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":%q}]}`, strings.Repeat("a", 256<<10))
	limit := 10 * reservation(body, 5)
	p := fastRetries
	p.AttemptTimeout = 700 * time.Millisecond
	tr := srv.transport(t)
	// The connection is open before the call: its TLS handshake, slow
	// under -race on a loaded machine, is not what the AttemptTimeout
	// should time here.
	warm, err := http.NewRequest(http.MethodGet, srv.srv.URL, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(warm)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	b, client := h2Stack(t, tr, limit, p)
	// The AttemptTimeout does not bound writing the body (see
	// RetryPolicy.AttemptTimeout): the caller's deadline, well after it,
	// does.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = callReadable(ctx, client, srv.srv.URL, body)
	t.Logf("err %v after %v", err, time.Since(start))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts, "the AttemptTimeout did not cut the stalled write")
	assert.Less(t, time.Since(start), 5*time.Second)
	_, held, err := b.Totals(context.Background())
	require.NoError(t, err)
	assert.Zero(t, held)
	t.Logf("charged %v", b.Spent())
}

// tlsFront serves HTTP/2 over TLS (httptest's certificate) in front of
// plain, a loopback h2c server written frame by frame, and returns its
// URL and a client transport that trusts it.
func tlsFront(t *testing.T, plain string) (string, *http.Transport) {
	t.Helper()
	hs := httptest.NewUnstartedServer(http.NotFoundHandler())
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	cfg := hs.TLS.Clone()
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	serveEach(t, ln, func(c net.Conn) {
		u, err := net.Dial("tcp", strings.TrimPrefix(plain, "http://"))
		if err != nil {
			return
		}
		defer u.Close()
		go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
		io.Copy(c, u)
	})
	tr := hs.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return "https://" + ln.Addr().String(), tr
}

// net/http's own replays of a POST over TLS (a stream reset with
// PROTOCOL_ERROR or REFUSED_STREAM once read whole; a GOAWAY denying a
// stream read whole) reach the server only within the Limit, through the
// whole stack.
func TestH2StackLimitHoldsAgainstNetHTTPReplaysOverTLS(t *testing.T) {
	bill := func(b []byte) Money { return reservation(string(b), 5) }
	const usage = `{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}`
	for _, c := range []struct {
		name  string
		start func(t *testing.T) (plain string, billed func() int64)
	}{
		{"PROTOCOL_ERROR", func(t *testing.T) (string, func() int64) {
			s := newH2Resetter(t, 1, 100, "", bill, usage)
			return s.URL(), s.billed.Load
		}},
		{"REFUSED_STREAM", func(t *testing.T) (string, func() int64) {
			s := newH2Resetter(t, 7, 100, "", bill, usage)
			return s.URL(), s.billed.Load
		}},
		{"GOAWAY denying the stream", func(t *testing.T) (string, func() int64) {
			s := newH2Stall(t, bill)
			s.goAways.Store(100)
			return s.URL(), s.billed.Load
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain, billed := c.start(t)
			url, tr := tlsFront(t, plain)
			limit := 2 * reservation(writeOnceBody, 5)
			p := fastRetries
			p.MaxRetries = 5
			b, client := h2Stack(t, tr, limit, p)
			start := time.Now()
			for range 2 {
				_, err := callReadable(context.Background(), client, url, writeOnceBody)
				t.Logf("err %v", err)
			}
			assert.Less(t, time.Since(start), 5*time.Second)
			tr.CloseIdleConnections()
			t.Logf("billed %v, charged %v, limit %v", Money(billed()), b.Spent(), limit)
			assert.Positive(t, billed())
			assert.LessOrEqual(t, Money(billed()), b.Spent(), "every write charged")
			assert.LessOrEqual(t, Money(billed()), limit, "the provider may bill no more than the Limit")
		})
	}
}

// The stack with fallbacks, Fallback → Retrier → Breaker → Budget →
// Limiter, over HTTP/2 with TLS: a primary that resets every stream it
// read whole (before its answer, or amid a chat stream), and a healthy
// second target. Every body either server read whole is charged, under
// one Limit, and every call ends in a readable answer or an error.
func TestH2FallbackStackChargesEveryBilledAttempt(t *testing.T) {
	const stream = `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	for _, c := range []struct {
		name  string
		body  string
		fault func(s *h2Billing, w http.ResponseWriter, r *http.Request, body []byte, i int64)
	}{
		{"RST_STREAM before headers", writeOnceBody, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			panic(http.ErrAbortHandler)
		}},
		{"SSE cut by RST_STREAM", stream, func(s *h2Billing, w http.ResponseWriter, r *http.Request, b []byte, i int64) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			primary := newH2Billing(t, c.fault)
			second := newH2Billing(t, nil)
			f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.srv.URL + "/v1"}, {BaseURL: second.srv.URL + "/v1"}}})
			require.NoError(t, err)
			r, err := NewRetrier(fastRetries)
			require.NoError(t, err)
			br, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 3})
			require.NoError(t, err)
			limit := 8 * reservation(c.body, 5) * 3 / 2 // include_usage lengthens a stream's body
			b := newTestBudget(t, BudgetConfig{Limit: limit})
			l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
			require.NoError(t, err)
			client := &http.Client{Transport: Chain(primary.transport(t), f, r, br, b, l), Timeout: 20 * time.Second}
			for range 6 {
				status, err := callReadable(context.Background(), client, primary.srv.URL, c.body)
				t.Logf("status %d, err %v", status, err)
			}
			primary.srv.Close()
			second.srv.Close()
			billed := Money(primary.billed.Load() + second.billed.Load())
			t.Logf("read whole: primary %d, second %d; billed %v, charged %v, limit %v", primary.reads.Load(), second.reads.Load(), billed, b.Spent(), limit)
			assert.Positive(t, primary.reads.Load())
			assert.LessOrEqual(t, billed, b.Spent(), "every write a server read whole charged")
			assert.LessOrEqual(t, billed, limit, "the providers may bill no more than the Limit")
			_, held, err := b.Totals(context.Background())
			require.NoError(t, err)
			assert.Zero(t, held, "nothing stays reserved")
		})
	}
}

// loopback is the listener of a test server that speaks on raw
// connections: embed it, and serve it with serveEach or serveIndexed.
type loopback struct{ ln net.Listener }

// listenLoopback listens on a loopback port until the test ends (see
// serveEach).
func listenLoopback(t testing.TB) loopback {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return loopback{ln}
}

// URL is the server's base URL, plain HTTP.
func (l loopback) URL() string { return "http://" + l.ln.Addr().String() }

// serveEach serves each connection ln accepts with serve, on a goroutine
// of its own, until the test ends; then it closes ln and every connection
// (whoever holds them open) and waits for the goroutines.
func serveEach(t testing.TB, ln net.Listener, serve func(net.Conn)) {
	serveIndexed(t, ln, func(c net.Conn, _ int) { serve(c) })
}

// serveIndexed is serveEach for a serve that is told each connection's
// index, from 0 in the order accepted.
func serveIndexed(t testing.TB, ln net.Listener, serve func(c net.Conn, n int)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c, n) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
