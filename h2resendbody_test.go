// StrictMaxConcurrentRequests, which makes a request wait on a full
// HTTP/2 connection for a stream, came in Go 1.26.

//go:build go1.26

package httpguard

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// oneStreamServer is a loopback HTTP/2 server (h2c, prior knowledge)
// written frame by frame. Its first connection takes one stream at a
// time (SETTINGS_MAX_CONCURRENT_STREAMS 1) and holds the request of its
// first stream, read whole, until retire is closed: it then sends a GOAWAY
// naming that stream and answers it. Each later connection answers its
// first request 503 at once and gives its body no flow-control window,
// so that the client is still writing it; it reads and answers the
// others. It bills every request it answers 200 (its reservation at
// testPrices, which the usage it answers equals).
type oneStreamServer struct {
	loopback
	held   chan struct{} // closed once the first stream's request is read
	retire chan struct{}
	billed atomic.Int64
	early  atomic.Int64 // requests answered 503 at once
}

func newOneStreamServer(t *testing.T) *oneStreamServer {
	t.Helper()
	s := &oneStreamServer{loopback: listenLoopback(t), held: make(chan struct{}), retire: make(chan struct{})}
	serveIndexed(t, s.ln, s.serve)
	return s
}

func (s *oneStreamServer) serve(c net.Conn, conn int) {
	var settings []byte
	if conn == 0 {
		settings = []byte{0, 3, 0, 0, 0, 1} // SETTINGS_MAX_CONCURRENT_STREAMS 1
	}
	answer := func(write h2Write, stream uint32, body []byte) {
		cr, _ := parseChatRequest(body)
		s.billed.Add(int64(reservation(string(body), int(cr.MaxOutput))))
		write(1, 4, stream, []byte{0x88}) // ":status: 200"
		write(0, 1, stream, fmt.Appendf(nil, `{"id":"x","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(body), cr.MaxOutput))
	}
	streams := 0
	serveH2Requests(c, settings, func(write h2Write, stream uint32) (starve bool) {
		streams++
		if conn > 0 && streams == 1 { // answered 503 at once
			s.early.Add(1)
			write(1, 4, stream, []byte{0x08, 3, '5', '0', '3'}) // ":status: 503", its body to come
			return true
		}
		return false
	}, func(write h2Write, stream uint32, body []byte) {
		if conn == 0 && stream == 1 {
			close(s.held)
			go func() {
				<-s.retire
				var g [8]byte
				binary.BigEndian.PutUint32(g[:4], 1) // the last stream it processes
				write(7, 0, 0, g[:])
				answer(write, 1, body)
			}()
			return
		}
		answer(write, stream, body)
	})
}

// net/http sends a request again from its GetBody when the HTTP/2
// connection it waited on for a stream (the server's concurrent streams
// in use, StrictMaxConcurrentRequests) gets a GOAWAY: nothing of it was
// written, but its Body was closed, which is what the Retrier waits for
// before its next GetBody (see sentBody). The Budget handed that resend
// GetBody's own copy, as to a layer below reading one before any write:
// when the server answered the resend 503 before its body was written
// whole, the retry's GetBody rewound the caller's reader under net/http's
// write (openai-go's and anthropic-sdk-go's, for a *bytes.Reader body):
// GetBody called while a copy it handed out was still read, in 10 of 10
// runs (9 of 10 under -race, which reported the data race). A copy served
// once an exchange began (a connection was asked for) is now read into
// memory first.
func TestARetryWaitsUntilNetHTTPsResendOfARequestThatGotNoStreamIsDoneWithTheBody(t *testing.T) {
	s := newOneStreamServer(t)
	tr := h2cTransport(t)
	tr.HTTP2 = &http.HTTP2Config{StrictMaxConcurrentRequests: true}
	body := largeChat(1 << 20)
	r, sl := newTestRetrier(t, fastRetries)
	b := newTestBudget(t, BudgetConfig{Limit: 100 * reservation(body, 5)})
	client := &http.Client{Transport: Chain(tr, r, b), Timeout: 10 * time.Second}
	first := make(chan error, 1)
	go func() { // holds the connection's one stream
		resp, err := client.Do(idempotentPost(t, s.URL(), chatBody("m", 5), false))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		first <- err
	}()
	<-s.held
	req, underRead := handoutRequest(t, s.URL(), body)
	var once sync.Once
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { once.Do(func() { close(s.retire) }) }, // it waits for the stream
	}))

	resp, err := client.Do(req)

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.NoError(t, <-first)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 1, s.early.Load(), "net/http's resend, answered 503 at once")
	assert.Len(t, sl.all(), 1, "one retry, after the 503")
	assert.Zero(t, underRead.Load(), "GetBody called while a copy it handed out was still read")
	assert.LessOrEqual(t, Money(s.billed.Load()), b.Spent())
}
