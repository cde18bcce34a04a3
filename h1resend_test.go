package httpguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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

// h1Act is what an h1Server does with a request it has read the headers
// of: its connection's index (from 0, in the order accepted) and the
// request's index on it.
type h1Act int

const (
	h1Answer     h1Act = iota // read the body whole, bill it, answer 200 with usage (keep-alive)
	h1Drop                    // read the body whole, bill it, close without answering
	h1DropUnread              // read the body, not billed (never run), close without answering, as on a keep-alive timeout
	h1Early503                // answer 503 at once, then read the body slowly (not billed: an error status)
)

// h1Server is a raw HTTP/1.1 server on loopback that bills every request
// body it reads whole (its reservation at testPrices with the body's
// max_tokens, which an answer's usage equals: see answerBound) and does
// with each request what act says.
type h1Server struct {
	loopback
	act    func(conn, n int) h1Act
	reads  atomic.Int64 // bodies read whole
	billed atomic.Int64
}

func newH1Server(t *testing.T, act func(conn, n int) h1Act) *h1Server {
	t.Helper()
	s := &h1Server{loopback: listenLoopback(t), act: act}
	serveIndexed(t, s.ln, func(c net.Conn, conn int) {
		c.(*net.TCPConn).SetReadBuffer(smallSocketBuffer) // a body of megabytes is not taken in at once
		s.serve(c, conn)
	})
	return s
}

func (s *h1Server) serve(c net.Conn, conn int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		act := h1Answer
		if req.Method != http.MethodGet {
			act = s.act(conn, n)
		}
		switch act {
		case h1DropUnread:
			// The body is read whole first: closed while net/http still
			// wrote it, the write's error may reach the caller instead of
			// the read's EOF, which net/http resends on (2 runs in 100).
			io.Copy(io.Discard, req.Body)
			return
		case h1Early503: // as earlyAnswerServer answers
			io.CopyN(io.Discard, req.Body, 16)
			if _, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
				return
			}
			if !readSlowly(req.Body) {
				return
			}
			continue
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		if req.Method == http.MethodGet {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
			continue
		}
		s.reads.Add(1)
		cr, _ := parseChatRequest(body)
		s.billed.Add(int64(reservation(string(body), int(cr.MaxOutput))))
		if act == h1Drop {
			return
		}
		answer := fmt.Sprintf(`{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(body), cr.MaxOutput)
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer); err != nil {
			return
		}
	}
}

// warm opens a kept-alive connection to s on tr, by a GET answered.
func (s *h1Server) warm(t *testing.T, tr http.RoundTripper) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL()+"/v1/models", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// idempotentPost is a chat POST of body to url with an Idempotency-Key
// (which openai-go and anthropic-sdk-go send when the caller sets one,
// option.WithHeader), which makes net/http deem it replayable: its GetBody
// rewinds and hands out the very reader its Body reads when shared is set,
// as theirs does for a *bytes.Reader body, else http.NewRequest's.
func idempotentPost(t *testing.T, url, body string, shared bool) *http.Request {
	t.Helper()
	var req *http.Request
	if shared {
		req = sharedReaderRequest(t, url+"/v1/chat/completions", body)
	} else {
		var err error
		req, err = http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "stainless-node-retry-1")
	return req
}

// largeChat is a chat body of about size bytes, max_tokens 5.
func largeChat(size int) string {
	return `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", size) + `"}]}`
}

// smallBufferTransport is a transport whose connections have small socket
// write buffers (see smallSocketBuffer).
func smallBufferTransport(t *testing.T) *http.Transport {
	d := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(smallSocketBuffer)
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// net/http sends a replayable request (one with an Idempotency-Key) again
// on a new connection when its kept-alive one breaks after it was written:
// the Budget holds a second reservation for that resend (see holdAgain)
// and charges the lost write its reservation. When the server answered the
// resend with an error status before net/http reported its body written
// whole (a 503 after its first bytes, as a gateway refusing an upload
// does), the attempt counted no write unanswered, released both
// reservations, and the write the server had read and billed was charged
// nothing: billed 2 reservations, charged 1, and a second call went out on
// the money (billed 3 against a Limit of 2).
func TestBudgetChargesTheWriteLostBeforeAResendAnsweredEarly(t *testing.T) {
	s := dropThenEarly503(t)
	tr := smallBufferTransport(t)
	s.warm(t, tr)
	body := largeChat(1 << 20)
	res := reservation(body, 5)
	r, _ := newTestRetrier(t, fastRetries)
	b := newTestBudget(t, BudgetConfig{Limit: 2 * res, MaxWait: -1})
	client := &http.Client{Transport: Chain(tr, r, b), Timeout: 10 * time.Second}

	for range 2 {
		if resp, err := client.Do(idempotentPost(t, s.URL(), body, false)); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	billed := Money(s.billed.Load())
	t.Logf("bodies read whole %d, billed %v, charged %v, Limit %v", s.reads.Load(), billed, b.Spent(), b.Limit())
	assert.LessOrEqual(t, billed, b.Spent(), "every write the server read is charged")
	assert.LessOrEqual(t, billed, b.Limit())
}

// handoutRequest is idempotentPost's shared request whose GetBody counts,
// at each call, the copies it handed out before that net/http or a layer
// has read from and not closed: a GetBody that rewinds the shared reader
// under such a copy makes two readers of one reader.
func handoutRequest(t *testing.T, url, body string) (*http.Request, *atomic.Int64) {
	t.Helper()
	req := idempotentPost(t, url, body, true)
	shared := req.GetBody
	var mu sync.Mutex
	var open []*handout
	var underRead atomic.Int64
	req.GetBody = func() (io.ReadCloser, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range open {
			if h.read.Load() && !h.closed.Load() {
				underRead.Add(1)
			}
		}
		rc, err := shared()
		h := &handout{ReadCloser: rc}
		open = append(open, h)
		return h, err
	}
	req.Body, _ = req.GetBody()
	return req, &underRead
}

type handout struct {
	io.ReadCloser
	read, closed atomic.Bool
}

func (h *handout) Read(p []byte) (int, error) {
	n, err := h.ReadCloser.Read(p)
	if n > 0 {
		h.read.Store(true)
	}
	return n, err
}

func (h *handout) Close() error {
	h.closed.Store(true)
	return h.ReadCloser.Close()
}

// net/http writes a request's body on after the answer came (a 503 after
// the first bytes of an upload), and the Retrier calls GetBody for a retry
// only once the transport below is done with the body of the attempt
// before (see sentBody). When the answer came to net/http's own resend of
// the attempt, on a second reservation of the Budget's, the body being
// written was a GetBody copy the Budget handed net/http after the body the
// Retrier tracks was closed: the retry's GetBody rewound the shared reader
// under that write (openai-go's and anthropic-sdk-go's, for a
// *bytes.Reader body): a data race -race flagged on a plain shared reader,
// and here a GetBody called under a copy still read in 8 of 8 subtest
// runs. The Budget now hands net/http a copy in memory for a resend.
func TestARetryWaitsUntilNetHTTPsResendIsDoneWithTheBody(t *testing.T) {
	for _, breaker := range []bool{false, true} {
		name := "retrier+budget"
		if breaker {
			name = "retrier+breaker+budget+limiter"
		}
		t.Run(name, func(t *testing.T) {
			s := dropThenEarly503(t)
			tr := smallBufferTransport(t)
			s.warm(t, tr)
			body := largeChat(1 << 20)
			r, sl := newTestRetrier(t, fastRetries)
			b := newTestBudget(t, BudgetConfig{Limit: 100 * reservation(body, 5)})
			layers := []Layer{r, b}
			if breaker {
				l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
				require.NoError(t, err)
				br, err := NewBreaker(BreakerConfig{})
				require.NoError(t, err)
				layers = []Layer{r, br, b, l}
			}
			client := &http.Client{Transport: Chain(tr, layers...), Timeout: 10 * time.Second}
			req, underRead := handoutRequest(t, s.URL(), body)

			resp, err := client.Do(req)

			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Len(t, sl.all(), 1, "one retry, after the 503")
			assert.Zero(t, underRead.Load(), "GetBody called while a copy it handed out was still read")
			assert.EqualValues(t, 2, s.reads.Load(), "the write lost and the retry, each read whole")
			assert.LessOrEqual(t, Money(s.billed.Load()), b.Spent())
		})
	}
}

// A replayable POST (one with an Idempotency-Key) whose kept-alive
// connection breaks after it was written is sent again by net/http, once,
// on the Budget's second reservation, under the full stack over HTTP/1.1:
// served without a retry of the Retrier's, no failure counted by the
// Breaker, and each write charged, whether or not the server read the
// first (when it did not, the Budget cannot tell, and charges it too).
func TestFullStackLetsNetHTTPSendAgainAnIdempotentPostItsKeptAliveConnectionLost(t *testing.T) {
	for _, read := range []bool{true, false} {
		t.Run(fmt.Sprintf("read=%v", read), func(t *testing.T) {
			s := newH1Server(t, func(conn, n int) h1Act {
				switch {
				case conn == 0 && n == 1 && read:
					return h1Drop
				case conn == 0 && n == 1:
					return h1DropUnread
				}
				return h1Answer
			})
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			s.warm(t, tr)
			body := chatBody("m", 5)
			res := reservation(body, 5)
			r, sl := newTestRetrier(t, RetryPolicy{MaxRetries: 3, BaseDelay: time.Minute, MaxDelay: time.Minute})
			b := newTestBudget(t, BudgetConfig{Limit: 2 * res})
			l, err := NewLimiter(LimitConfig{TokensPerMinute: 600_000_000})
			require.NoError(t, err)
			br, err := NewBreaker(BreakerConfig{ConsecutiveFailures: 1})
			require.NoError(t, err)
			client := &http.Client{Transport: Chain(tr, r, br, b, l), Timeout: 10 * time.Second}

			resp, err := client.Do(idempotentPost(t, s.URL(), body, true))

			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Empty(t, sl.all(), "no retry of the Retrier's, nor its wait")
			for _, st := range br.Stats() {
				assert.Zero(t, st.Failures, "%+v", st)
			}
			billed := Money(s.billed.Load())
			t.Logf("bodies read whole %d, billed %v, charged %v", s.reads.Load(), billed, b.Spent())
			assert.Equal(t, 2*res, b.Spent(), "the write lost and the resend answered, each its reservation")
			assert.LessOrEqual(t, billed, b.Spent())
		})
	}
}

// dropThenEarly503 is a server that reads and bills the call after its
// warm-up request on the kept-alive connection and drops the connection
// unanswered, then answers net/http's resend, on a new connection, 503 at
// once, before reading its body.
func dropThenEarly503(t *testing.T) *h1Server {
	return newH1Server(t, func(conn, n int) h1Act {
		switch {
		case conn == 0 && n == 1: // the call, on the kept-alive connection
			return h1Drop
		case conn == 1 && n == 0: // net/http's resend
			return h1Early503
		}
		return h1Answer
	})
}

// The Budget adds stream_options.include_usage to a stream request that
// does not ask for its usage, a few bytes past the body it priced within
// MaxBufferedBody. net/http's resend of such a request, on the Budget's
// second reservation after its kept-alive connection broke, read the copy
// into memory within MaxBufferedBody (resendBody) and failed once the
// body priced came within those bytes of it: the call ended in "request
// body exceeds the buffering limit", left to a retry of the Retrier's
// after its backoff (a Breaker's failure), where net/http would have sent
// it again at once.
func TestNetHTTPSendsAgainAStreamRequestTheBudgetLengthenedPastMaxBufferedBody(t *testing.T) {
	s := newH1Server(t, func(conn, n int) h1Act {
		if conn == 0 && n == 1 { // the call, on the kept-alive connection
			return h1Drop
		}
		return h1Answer
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	s.warm(t, tr)
	body := `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	r, sl := newTestRetrier(t, RetryPolicy{MaxRetries: 3, BaseDelay: time.Minute, MaxDelay: time.Minute})
	b := newTestBudget(t, BudgetConfig{Limit: 100 * reservation(body, 5), MaxBufferedBody: int64(len(body))})
	client := &http.Client{Transport: Chain(tr, r, b), Timeout: 10 * time.Second}

	resp, err := client.Do(idempotentPost(t, s.URL(), body, true))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, sl.all(), "no retry of the Retrier's, nor its wait")
	assert.EqualValues(t, 2, s.reads.Load(), "the write lost and net/http's resend")
}

// net/http's resend asks the Budget's GetBody for a copy, which the Budget
// reads into memory (see resendBody). A caller's GetBody whose copy stalls
// (an io.Pipe an upload is written into, say) held that read, and with it
// the call, past the request's deadline, without end: net/http, which
// would write such a copy itself, closes it when the context ends. The
// copy is now read under the request's context, as a body without
// GetBody is.
func TestBudgetReadsAResendsCopyUnderTheRequestsContext(t *testing.T) {
	var stall atomic.Bool
	s := newH1Server(t, func(conn, n int) h1Act {
		stall.Store(true) // the first write is read whole; its resend's copy stalls
		return h1Drop
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	s.warm(t, tr)
	body := chatBody("m", 5)
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(body, 5), MaxWait: -1})
	client := &http.Client{Transport: Chain(tr, b)}
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req := idempotentPost(t, s.URL(), body, false)
	req = req.WithContext(ctx)
	req.GetBody = func() (io.ReadCloser, error) {
		if stall.Load() {
			return pr, nil
		}
		return io.NopCloser(strings.NewReader(body)), nil
	}
	done := make(chan error, 1)
	start := time.Now()

	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()

	select {
	case err := <-done:
		t.Logf("after %v: %v", time.Since(start), err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(5 * time.Second):
		pw.CloseWithError(errors.New("the test's end"))
		<-done
		t.Fatal("the call outlived its deadline by seconds, reading the resend's copy")
	}
	assert.EqualValues(t, 1, s.reads.Load())
	assert.LessOrEqual(t, Money(s.billed.Load()), b.Spent(), "the write lost is charged")
}
