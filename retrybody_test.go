package httpguard

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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

// earlyAnswerServer is a loopback HTTP/1.1 server on a listener of its own.
// It answers the first request 503 once it has read the headers and a few
// bytes of the body, as a gateway refusing an upload does, and then reads
// the rest of that connection slowly, so that net/http is still writing
// (reading the caller's body) after it returned the 503. It reads every
// later request whole, answers it 200 with usage and bills it.
type earlyAnswerServer struct {
	ln     net.Listener
	hits   atomic.Int64
	billed atomic.Int64 // Money, at testPrices, of the answers it gave
	wg     sync.WaitGroup
	mu     sync.Mutex
	whole  []string // the bodies it read to their end, as they arrived
}

func newEarlyAnswerServer(t *testing.T) *earlyAnswerServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &earlyAnswerServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// smallSocketBuffer keeps the kernel from taking a body of megabytes
// into its buffers at once: the client writes it as the server reads it.
const smallSocketBuffer = 16 << 10

// client returns a client whose transport is layers over a transport with
// small socket buffers.
func (s *earlyAnswerServer) client(t *testing.T, layers ...Layer) *http.Client {
	t.Helper()
	d := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(smallSocketBuffer)
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: Chain(tr, layers...)}
}

func (s *earlyAnswerServer) url() string {
	return "http://" + s.ln.Addr().String() + "/v1/chat/completions"
}

func (s *earlyAnswerServer) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if s.hits.Add(1) == 1 {
			io.CopyN(io.Discard, req.Body, 16)
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}")
			if !readSlowly(req.Body) {
				return
			}
			continue
		}
		b, err := io.ReadAll(req.Body)
		if err != nil { // cut short: not received as a request
			return
		}
		s.mu.Lock()
		s.whole = append(s.whole, string(b))
		s.mu.Unlock()
		u := Usage{InputTokens: 10, OutputTokens: 5}
		s.billed.Add(int64(testPrices["m"].Cost(u)))
		answer := fmt.Sprintf(`{"id":"x","model":"m","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, u.InputTokens, u.OutputTokens)
		contentType := "application/json"
		if strings.Contains(string(b), `"stream":true`) {
			answer, contentType = "data: "+answer+"\n\ndata: [DONE]\n\n", "text/event-stream"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", contentType, len(answer), answer)
	}
}

// readSlowly reads what is left of a body 4 KiB at a time with a pause
// between reads, so that the client is still writing it after it read the
// answer, and reports whether it read to the body's end.
func readSlowly(body io.Reader) bool {
	for {
		_, err := io.CopyN(io.Discard, body, 4<<10)
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (s *earlyAnswerServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.whole...)
}

// seekingBodyRequest returns a POST of body whose GetBody rewinds and
// returns the very reader its Body reads, as openai-go builds a request
// from a *bytes.Reader; a negative length sends it chunked.
func seekingBodyRequest(t *testing.T, url, body string, length int64) *http.Request {
	t.Helper()
	req := sharedReaderRequest(t, url, body)
	req.ContentLength = length
	return req
}

// A server may answer before it has read the whole upload (a 503, 413 or
// 429 refusing it), and net/http goes on writing the body after RoundTrip
// has returned. A retry must not read the caller's body while that write
// still does: with a GetBody that rewinds a shared reader, both would read
// one reader (a data race), and the retry would send what the old write
// left of it.
func TestARetryWaitsUntilTheEarlierAttemptIsDoneWithTheBody(t *testing.T) {
	prompt := strings.Repeat("a", 2<<20)
	chat := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	stream := `{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	for _, c := range []struct {
		name       string
		body, sent string // sent: the body as the Budget sends it
		chunked    bool
		budget     bool
	}{
		{name: "retrier", body: chat, sent: chat},
		{name: "retrier/chunked", body: chat, sent: chat, chunked: true},
		{name: "retrier+budget", body: chat, sent: chat, budget: true},
		{name: "retrier+budget/chunked", body: chat, sent: chat, chunked: true, budget: true},
		// The Budget sends a stream with include_usage added, edited as it
		// is read from GetBody copies.
		{name: "retrier+budget/stream", body: stream, sent: `{"stream_options":{"include_usage":true},` + stream[1:], budget: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newEarlyAnswerServer(t)
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			layers := []Layer{r}
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar})
			if c.budget {
				layers = append(layers, b)
			}
			length := int64(len(c.body))
			if c.chunked {
				length = -1
			}

			resp, err := s.client(t, layers...).Do(seekingBodyRequest(t, s.url(), c.body, length))

			for i, got := range s.received() {
				assert.True(t, got == c.sent, "body received whole #%d has %d bytes of %d", i+1, len(got), len(c.sent))
			}
			require.NoError(t, err, "the retry waits for the earlier write, then sends the body whole")
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode)
			assert.EqualValues(t, 2, s.hits.Load())
			if c.budget {
				assert.Equal(t, Money(s.billed.Load()), b.Spent(), "the Budget charged what the server billed")
				assert.LessOrEqual(t, Money(s.billed.Load()), b.Limit())
			}
		})
	}
}

// A layer below the Retrier that replaces a request's Body and never
// closes the one it replaced (breaking the RoundTripper contract, as some
// logging middleware does) leaves the Retrier waiting for a body that may
// still be read. Once maxBodyWait has passed it sends no retry (GetBody
// could rewind the reader under a read) and returns the answer it had,
// whole, rather than an error.
func TestARetryIsNotSentWhileTheLayerBelowKeepsTheBodyAndTheLastAnswerIsReturned(t *testing.T) {
	const answer = `{"error":{"message":"overloaded","type":"server_error"}}`
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, req.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	var kept []io.ReadCloser
	logging := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(req.Body) // read, logged, and not closed
		kept = append(kept, req.Body)
		out := req.Clone(req.Context())
		out.Body = io.NopCloser(bytes.NewReader(body))
		return srv.Client().Transport.RoundTrip(out)
	})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	var bound time.Duration
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == maxBodyWait {
			bound = d
			d = 0 // the bound passes at once
		}
		return time.AfterFunc(d, f)
	}
	req := sharedReaderRequest(t, srv.URL, "payload")
	getBody, opened := req.GetBody, 0
	req.GetBody = func() (io.ReadCloser, error) { opened++; return getBody() }

	resp, err := r.Wrap(logging).RoundTrip(req)

	require.NoError(t, err, "the caller gets the answer the Retrier had")
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, answer, string(got), "whole")
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.Equal(t, maxBodyWait, bound)
	assert.EqualValues(t, 1, hits.Load(), "no retry was sent")
	assert.Len(t, kept, 1)
	assert.Zero(t, opened, "GetBody was called while the body was still held")
}

// An answer whose body does not end within the drain's bounds cannot be
// kept whole: then the held body ends the request with an error.
func TestARetryIsNotSentWhileTheTransportBelowKeepsTheBodyAndItsAnswerIsTooLong(t *testing.T) {
	next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		body := io.NopCloser(io.LimitReader(zeros{}, maxDrain+1))
		return &http.Response{StatusCode: 503, Header: http.Header{}, Body: body, Request: req}, nil
	})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == maxBodyWait {
			d = 0
		}
		return time.AfterFunc(d, f)
	}

	_, err := r.Wrap(next).RoundTrip(sharedReaderRequest(t, "http://x/", "payload"))

	assert.ErrorIs(t, err, errBodyStillRead)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestTheWaitForTheTransportBelowEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		// The body is kept, never closed.
		return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	})
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	r.sleep = func(context.Context, time.Duration) error {
		cancel() // the caller gives up as the backoff ends
		return nil
	}

	_, err = r.Wrap(next).RoundTrip(sharedReaderRequest(t, "http://x/", "payload").WithContext(ctx))

	assert.ErrorIs(t, err, context.Canceled)
}

// gatedBody is a body whose Read waits for release, counting its Closes.
type gatedBody struct {
	reading, release chan struct{}
	closed           atomic.Int32
}

func (b *gatedBody) Read(p []byte) (int, error) {
	close(b.reading)
	<-b.release
	return 0, io.EOF
}

func (b *gatedBody) Close() error { b.closed.Add(1); return nil }

// A layer that sends a GetBody copy in place of the request's Body (the
// Budget, the Limiter, the Breaker: see rewindingBody and editedBody)
// closes that Body only once no Read of the copy is under way: a Retrier
// above waits for that Close before it calls GetBody again.
func TestABodyReadInPlaceOfAnotherClosesItOnlyOnceItsReadsEnded(t *testing.T) {
	for name, standIn := range map[string]func(replaced io.ReadCloser, fresh func() (io.ReadCloser, error)) io.ReadCloser{
		"rewindingBody": func(replaced io.ReadCloser, fresh func() (io.ReadCloser, error)) io.ReadCloser {
			r := &http.Request{Body: replaced, GetBody: fresh}
			var b rewindingBody
			b.rewind(r)
			return r.Body
		},
		"editedBody": func(replaced io.ReadCloser, fresh func() (io.ReadCloser, error)) io.ReadCloser {
			r := &http.Request{Body: replaced, GetBody: fresh}
			(&bodyEdit{at: 1, insert: "x", length: 2}).apply(r)
			return r.Body
		},
	} {
		t.Run(name, func(t *testing.T) {
			replaced := &gatedBody{}
			fresh := &gatedBody{reading: make(chan struct{}), release: make(chan struct{})}
			replacedEmpty := struct {
				io.Reader
				io.Closer
			}{strings.NewReader(""), replaced} // emptied, as a shared reader is
			body := standIn(replacedEmpty, func() (io.ReadCloser, error) { return fresh, nil })
			read := make(chan struct{})
			go func() {
				defer close(read)
				body.Read(make([]byte, 8))
			}()
			<-fresh.reading

			require.NoError(t, body.Close())
			assert.Zero(t, replaced.closed.Load(), "closed while its copy was read")
			close(fresh.release)
			<-read
			assert.EqualValues(t, 1, replaced.closed.Load())
			assert.EqualValues(t, 1, fresh.closed.Load())
		})
	}
}

// Only a GetBody known to hand out a new reader each time spares the
// Retrier tracking the body: http.NewRequest's for its in-memory bodies.
func TestFreshGetBodyKnowsNewRequestsOwn(t *testing.T) {
	for _, body := range []io.Reader{bytes.NewBufferString("ab"), bytes.NewReader([]byte("ab")), strings.NewReader("ab")} {
		req, err := http.NewRequest(http.MethodPost, "http://x/", body)
		require.NoError(t, err)
		assert.True(t, freshGetBody(req.GetBody), "%T", body)
	}
	assert.False(t, freshGetBody(sharedReaderRequest(t, "http://x/", "ab").GetBody))
	fresh := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("ab")), nil }
	assert.False(t, freshGetBody(fresh), "a GetBody of the caller's own is not known")
}
