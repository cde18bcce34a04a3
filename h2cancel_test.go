package httpguard

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2Stall is a loopback HTTP/2 server (h2c, prior knowledge) written frame
// by frame. It bills every request body it reads whole (its DATA frames up
// to END_STREAM) at bill(body) and answers it with a 200 whose usage is
// the body's whole reservation. Its SETTINGS give new streams no window,
// so that a stream's body waits until the server grants it one (at once
// when autoWindow is set, else when the test calls window). When
// pauseNext is set, it stops reading the connection after the next
// request headers it reads, until resume is closed: the client's writes
// then back up in the socket.
type h2Stall struct {
	ln         net.Listener
	tls        *tls.Config // when set, it serves HTTP/2 over TLS
	bill       func(body []byte) Money
	billed     atomic.Int64
	autoWindow atomic.Bool
	pauseNext  atomic.Bool
	goAways    atomic.Int64 // how many more bodies read whole to answer with a GOAWAY saying no stream was processed
	resume     chan struct{}
	heads      chan uint32 // the streams whose request headers were read
	wg         sync.WaitGroup

	mu    sync.Mutex // guards c, conns and writes to c
	c     net.Conn
	conns []net.Conn
}

func newH2Stall(t *testing.T, bill func([]byte) Money) *h2Stall {
	return newH2StallTLS(t, bill, nil)
}

// newH2StallTLS is newH2Stall serving HTTP/2 over TLS with cfg, when cfg
// is not nil.
func newH2StallTLS(t *testing.T, bill func([]byte) Money, cfg *tls.Config) *h2Stall {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &h2Stall{ln: ln, tls: cfg, bill: bill, resume: make(chan struct{}), heads: make(chan uint32, 16)}
	s.autoWindow.Store(true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetReadBuffer(64 << 10)
			}
			if s.tls != nil {
				c = tls.Server(c, s.tls)
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		select {
		case <-s.resume:
		default:
			close(s.resume)
		}
		s.wg.Wait()
	})
	return s
}

// nextHeads returns the stream of the next request headers read.
func (s *h2Stall) nextHeads(t *testing.T) uint32 {
	t.Helper()
	select {
	case stream := <-s.heads:
		return stream
	case <-time.After(10 * time.Second):
		t.Fatal("no request headers reached the server")
		return 0
	}
}

func (s *h2Stall) URL() string {
	if s.tls != nil {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

func (s *h2Stall) write(typ, flags byte, stream uint32, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		h2Frame(s.c, typ, flags, stream, p)
	}
}

// window grants stream n more bytes of window.
func (s *h2Stall) window(stream, n uint32) {
	var inc [4]byte
	binary.BigEndian.PutUint32(inc[:], n)
	s.write(8, 0, stream, inc[:])
}

func (s *h2Stall) serve(c net.Conn) {
	defer c.Close()
	s.mu.Lock()
	s.c = c
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	preface := make([]byte, 24)
	if _, err := io.ReadFull(r, preface); err != nil {
		return
	}
	// SETTINGS: SETTINGS_INITIAL_WINDOW_SIZE (4) 0; then the whole
	// connection window.
	s.write(4, 0, 0, []byte{0, 4, 0, 0, 0, 0})
	s.window(0, 1<<31-1-65535)
	bodies := map[uint32][]byte{}
	for {
		typ, flags, stream, p, err := readH2Frame(r)
		if err != nil {
			return
		}
		switch typ {
		case 4: // SETTINGS
			if flags&1 == 0 {
				s.write(4, 1, 0, nil)
			}
		case 6: // PING
			if flags&1 == 0 {
				s.write(6, 1, 0, p)
			}
		case 1: // HEADERS: the request's
			if flags&1 != 0 { // no body: a 200 without one
				s.write(1, 5, stream, []byte{0x88})
				continue
			}
			bodies[stream] = []byte{}
			if s.autoWindow.Load() {
				s.window(stream, 1<<20)
			}
			pause := s.pauseNext.CompareAndSwap(true, false) // before telling: the test sets it once told
			s.heads <- stream
			if pause {
				<-s.resume
			}
		case 0: // DATA
			if flags&8 != 0 { // PADDED
				p = p[1 : len(p)-int(p[0])]
			}
			if b, ok := bodies[stream]; ok && len(b) < 1<<20 {
				bodies[stream] = append(b, p...)
			}
			if flags&1 == 0 {
				continue
			}
			body := bodies[stream]
			delete(bodies, stream)
			s.billed.Add(int64(s.bill(body)))
			if s.goAways.Add(-1) >= 0 {
				s.write(7, 0, 0, make([]byte, 8)) // GOAWAY: last stream 0, NO_ERROR
				return
			}
			s.write(1, 4, stream, []byte{0x88})
			s.write(0, 1, stream, fmt.Appendf(nil, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(body)))
		}
	}
}

// watchedConn is a client connection that tells whether a Write is under
// way, and how many ended. Once backUp is called its Writes wait until
// the returned release is called, as a socket whose peer reads nothing
// holds them once its buffers are full, which holds HTTP/2's connection
// write lock: explicitly, not guessed from a Write that has taken long.
type watchedConn struct {
	net.Conn
	since atomic.Int64 // when the Write under way began (UnixNano), 0 when none is
	ended atomic.Int64 // Writes that returned
	gate  atomic.Pointer[chan struct{}]
	held  atomic.Int64 // Writes that waited at the gate
}

func (c *watchedConn) Write(p []byte) (int, error) {
	c.since.Store(time.Now().UnixNano())
	if g := c.gate.Load(); g != nil {
		c.held.Add(1)
		<-*g
	}
	n, err := c.Conn.Write(p)
	c.since.Store(0)
	c.ended.Add(1)
	return n, err
}

// backUp makes the Writes from now on wait until release is called (once
// or more; the test's end calls it too).
func (c *watchedConn) backUp(t *testing.T) (release func()) {
	gate := make(chan struct{})
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release)
	c.gate.Store(&gate)
	return release
}

// blockedFor reports whether a Write has been under way for at least d.
func (c *watchedConn) blockedFor(d time.Duration) bool {
	since := c.since.Load()
	return since != 0 && time.Since(time.Unix(0, since)) >= d
}

// endlessZeros is an endless body of zero bytes.
type endlessZeros struct{}

func (endlessZeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Over HTTP/2 a request's body is written by a goroutine of net/http's own,
// which goes on once RoundTrip has returned: when the request's context
// ends, RoundTrip returns at once, without waiting for that writer (it
// waits for it only when the stream is reset or the connection lost). A
// writer that was waiting for the connection (here behind an upload
// sharing it, whose write backs up while the server reads nothing) then
// writes the request whole, END_STREAM and all, after the Budget settled
// the attempt. Settled as one never written, released, it was billed and
// charged nothing, and a second request then fit in the Limit the first
// one's bill had used ($0.00017 billed under a $0.000085 Limit). A write
// begun (its headers sent) whose end net/http has not reported is now
// charged.
func TestBudgetChargesAnHTTP2BodyWrittenAfterItsContextEnded(t *testing.T) {
	for _, proto := range []string{"h2c", "h2"} {
		for _, stack := range []string{"budget", "retrier+budget+limiter"} {
			t.Run(proto+"/"+stack, func(t *testing.T) { testH2BodyWrittenAfterItsContextEnded(t, proto == "h2", stack) })
		}
	}
}

func testH2BodyWrittenAfterItsContextEnded(t *testing.T, overTLS bool, stack string) {
	const body = writeOnceBody
	bill := func(b []byte) Money {
		if strings.Contains(string(b), `"model"`) {
			return reservation(string(b), 5)
		}
		return 0
	}
	var srv *h2Stall
	var tr *http.Transport
	if overTLS {
		// httptest's certificate and a client trusting it; the server is ours.
		hs := httptest.NewUnstartedServer(http.NotFoundHandler())
		hs.EnableHTTP2 = true
		hs.StartTLS()
		t.Cleanup(hs.Close)
		cfg := hs.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		srv = newH2StallTLS(t, bill, cfg)
		tr = hs.Client().Transport.(*http.Transport).Clone()
		t.Cleanup(tr.CloseIdleConnections)
	} else {
		srv = newH2Stall(t, bill)
		tr = h2cTransport(t)
	}
	var conns []*watchedConn // the connections the client dialled
	var connsMu sync.Mutex
	var d net.Dialer
	// One connection must carry the chat and the upload. A loaded machine
	// (CI running every module's tests at once) saw net/http dial a second
	// one now and then; one per host keeps them together.
	tr.MaxConnsPerHost = 1
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		w := &watchedConn{Conn: c}
		connsMu.Lock()
		conns = append(conns, w)
		connsMu.Unlock()
		return w, nil
	}
	limit := reservation(body, 5) // room for one attempt
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	layers := []Layer{b}
	if stack != "budget" {
		// The recommended order; the AttemptTimeout does not run while a
		// body is written, and the caller's own end is not retried.
		r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, AttemptTimeout: 5 * time.Second})
		require.NoError(t, err)
		l, err := NewLimiter(LimitConfig{TokensPerMinute: 6_000_000})
		require.NoError(t, err)
		layers = []Layer{r, b, l}
	}
	client := &http.Client{Transport: Chain(tr, layers...), Timeout: 20 * time.Second}

	// The client learns the server's settings (new streams get no window).
	warm, err := http.NewRequest(http.MethodGet, srv.URL()+"/v1/models", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(warm)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)

	// The chat request: its headers are written; its body waits for a window.
	srv.autoWindow.Store(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			done <- err
			return
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	chat := srv.nextHeads(t)

	// An upload on the same connection; the server stops reading after its
	// headers, then grants it a window: its write backs up in the socket,
	// holding the connection's write lock.
	srv.pauseNext.Store(true)
	uctx, ucancel := context.WithCancel(context.Background())
	defer ucancel()
	go func() {
		req, err := http.NewRequestWithContext(uctx, http.MethodPost, srv.URL()+"/v1/files", io.NopCloser(endlessZeros{}))
		if err != nil {
			return
		}
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()
	upload := srv.nextHeads(t)
	connsMu.Lock()
	require.Len(t, conns, 1, "one connection carries every request")
	conn := conns[0]
	connsMu.Unlock()
	// The socket backs up: the connection's Writes wait from now on (a
	// Write under way for 50ms, taken for one backed up, was now and then
	// only slow on a loaded machine, and ended).
	release := conn.backUp(t)
	srv.window(upload, 1<<31-1)
	for deadline := time.Now().Add(10 * time.Second); conn.held.Load() == 0; {
		require.True(t, time.Now().Before(deadline), "the upload's write never backed up")
		time.Sleep(time.Millisecond)
	}
	ended := conn.ended.Load()

	// The chat body gets its window; its writer waits for the write lock.
	srv.window(chat, 1<<16)
	for deadline := time.Now().Add(10 * time.Second); !bodyWriterWaitsForLock(); {
		require.True(t, time.Now().Before(deadline), "the chat body's writer never waited for the connection's write lock")
		time.Sleep(time.Millisecond)
	}

	// The caller gives up (its own deadline, http.Client.Timeout).
	cancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	// What makes this test: no write ended on the connection from before
	// the chat body got its window until its call returned, so that body
	// had not been written when the call returned.
	require.Equal(t, ended, conn.ended.Load(), "the connection was written to before the call returned")
	require.True(t, conn.blockedFor(0), "the connection was written to before the call returned")
	settled, held, err := b.Totals(context.Background())
	require.NoError(t, err)
	t.Logf("after the cancel: settled %v, held %v", settled, held)

	// The server reads on.
	release()
	close(srv.resume)
	deadline := time.Now().Add(10 * time.Second)
	for srv.billed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ucancel()
	require.Positive(t, srv.billed.Load(), "the body written after the call returned reached the server")
	t.Logf("first call: billed %v, charged %v, limit %v", Money(srv.billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write the server read whole charged")

	// The next call fits in the Limit, which the first one's bill used.
	srv.autoWindow.Store(true)
	resp, err = client.Post(srv.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t.Logf("second call: err %v; billed %v, charged %v, limit %v", err, Money(srv.billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
}

// failingCloseBody is a request body whose Close fails once its bytes were
// read: a caller's reader (a file, a decoder) that reports an error only
// when closed.
type failingCloseBody struct{ *strings.Reader }

func (failingCloseBody) Close() error { return fmt.Errorf("close failed") }

// net/http's HTTP/1 transport reports to httptrace's WroteRequest any error
// met while writing the request, even one met after the body's bytes went
// out whole, such as the body's Close. A body longer than the
// connection's write buffer has then reached the server, which reads it
// whole and bills it, while net/http closes the connection; the Budget,
// seeing no write, released the reservation, and a Retrier sent the
// request again under a new one, billed again (four reads, $0.08 billed
// under a $0.02 Limit, nothing charged). The Budget's body no longer
// passes a Close error on.
func TestBudgetChargesAnHTTP1BodyWrittenWholeWhoseCloseFailed(t *testing.T) {
	for _, stream := range []bool{false, true} { // a stream's body is edited to ask for its usage
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			body := fmt.Sprintf(`{"model":"m","max_tokens":5,"stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, strings.Repeat("a", 20<<10))
			// net/http reports the body's Close with the write it ended
			// (httptrace's WroteRequest): the server answers only once the
			// client has reported it, every time.
			wrote := make(chan struct{}, 16)
			srv := newRawBillingServer(t, func(c net.Conn, b []byte, _ int) bool {
				select {
				case <-wrote:
				case <-time.After(10 * time.Second):
					t.Error("the client never reported its write")
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"+
					`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(b))
				return false
			})
			limit := reservation(body, 5) * 3 / 2 // room for one attempt (include_usage lengthens a stream's), not two
			b := newTestBudget(t, BudgetConfig{Limit: limit})
			r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
			require.NoError(t, err)
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: Chain(tr, r, b), Timeout: 10 * time.Second}

			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
				select {
				case wrote <- struct{}{}:
				default:
				}
			}})
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+srv.addr+"/v1/chat/completions", nil)
			require.NoError(t, err)
			req.Body = failingCloseBody{strings.NewReader(body)}
			req.GetBody = func() (io.ReadCloser, error) { return failingCloseBody{strings.NewReader(body)}, nil }
			req.ContentLength = int64(len(body))
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			srv.stop() // every request the server read is billed
			t.Logf("err %v", err)
			t.Logf("the server read the request whole %d times; billed %v, charged %v, limit %v", srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
			assert.Positive(t, srv.reads.Load())
			assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write the server read whole charged")
			assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
		})
	}
}

// A server that reads a request whole, bills it, and then sends a GOAWAY
// whose last stream ID is below the request's, saying (falsely) that it
// processed none of it: net/http sends such a request again on a new
// connection, from GetBody. Each write must stay within the Limit.
func TestBudgetLimitHoldsAgainstAGoAwayDenyingARequestReadWhole(t *testing.T) {
	const body = writeOnceBody
	srv := newH2Stall(t, func(b []byte) Money { return reservation(string(b), 5) })
	srv.goAways.Store(3)
	limit := 2 * reservation(body, 5)
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	r, err := NewRetrier(RetryPolicy{MaxRetries: 5, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(h2cTransport(t), r, b), Timeout: 10 * time.Second}
	resp, err := client.Post(srv.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t.Logf("err %v; billed %v, charged %v, limit %v", err, Money(srv.billed.Load()), b.Spent(), limit)
	assert.Positive(t, srv.billed.Load())
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
}

// On a kept-alive HTTP/1 connection, a request with an Idempotency-Key that
// the server reads whole, bills, and then answers by closing the
// connection: net/http sends such a request again on its own (it is
// replayable and its connection was reused). Each write must stay within
// the Limit and be charged.
func TestBudgetLimitHoldsAgainstAnHTTP1ReplayOfAKeyedRequestOnAReusedConnection(t *testing.T) {
	const body = writeOnceBody
	res := reservation(body, 5)
	srv := newRawBillingServer(t, func(c net.Conn, b []byte, i int) bool {
		if i > 0 { // a request on the reused connection: billed, then the connection closed
			return false
		}
		answer := fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":5}}`, len(b))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
		return true
	})

	limit := 3 * res
	b, client := budgetRetrying(t, limit, 5, false)
	for range 3 {
		req, err := http.NewRequest(http.MethodPost, "http://"+srv.addr+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", "k")
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		t.Logf("err %v", err)
	}
	t.Logf("the server read %d requests whole; billed %v, charged %v, limit %v", srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
}

// The Retrier tells a request that was never sent by its transport error
// (see unsendable); net/http puts bytes of the server's answer in its
// errors, so a server that read the request whole, and billed it, could
// answer with a header line that read as one of those texts, and the
// caller was told that nothing was sent (IsRefusal, Attempts 0), the one
// sign the package gives that a request may be sent again at no cost. Only
// net/http's own error, whole, now says so.
func TestRetrierDoesNotCallAnAttemptTheServerReadUnsent(t *testing.T) {
	const body = writeOnceBody
	srv := newRawBillingServer(t, func(c net.Conn, _ []byte, _ int) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nunsupported protocol scheme\r\n\r\n")
		return false
	})

	b, client := budgetRetrying(t, 10*reservation(body, 5), 3, false)
	_, err := client.Post("http://"+srv.addr+"/v1/chat/completions", "application/json", strings.NewReader(body))
	require.Error(t, err)
	srv.stop()
	var re *RetryError
	require.ErrorAs(t, err, &re)
	t.Logf("err %v; attempts %d, refusal %v; billed %v, charged %v", err, re.Attempts, IsRefusal(err), Money(srv.billed.Load()), b.Spent())
	assert.Positive(t, srv.billed.Load())
	assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write charged")
	assert.False(t, IsRefusal(err), "the server read the request: it was sent")
	assert.Positive(t, re.Attempts, "the server read the request: it was sent")
}

// rawBillingServer is a loopback HTTP/1 server written by hand: it reads
// each request whole (by its Content-Length), bills its reservation at
// testPrices with max_tokens 5, then answers it with answer, writing to
// the connection as it likes (i counts the requests read on it before),
// and closes the connection unless answer says to read another.
type rawBillingServer struct {
	addr          string
	reads, billed atomic.Int64
	stop          func() // closes the listener and waits for every connection's end
}

func newRawBillingServer(t *testing.T, answer func(c net.Conn, body []byte, i int) (more bool)) *rawBillingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawBillingServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	s.stop = func() { ln.Close(); wg.Wait() }
	t.Cleanup(s.stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					s.billed.Add(int64(reservation(string(b), 5)))
					s.reads.Add(1)
					if !answer(c, b, i) {
						return
					}
				}
			}()
		}
	}()
	return s
}

// bodyWriterWaitsForLock reports whether a goroutine of net/http's HTTP/2
// transport is writing a request body and waiting for a mutex: the
// connection's write lock, past the writer's last check for an abort.
func bodyWriterWaitsForLock() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("writeRequestBody")) && bytes.Contains(g, []byte("sync.(*Mutex).Lock")) {
			return true
		}
	}
	return false
}
