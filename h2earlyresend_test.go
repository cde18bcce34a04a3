package httpguard

import (
	"bufio"
	"encoding/binary"
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

// turnAwayServer is a loopback HTTP/2 server (h2c, prior knowledge)
// written frame by frame. It reads its first request whole, bills it (its
// reservation at testPrices) and turns it away: with a RST_STREAM of code,
// or, when code is 0, a GOAWAY naming no stream processed. It answers the
// second, net/http's resend, 503 at once, giving its body no window, and
// reads, bills and answers the others 200 with usage equal to their
// reservation.
type turnAwayServer struct {
	loopback
	code     uint32
	requests atomic.Int64
	billed   atomic.Int64
}

func newTurnAwayServer(t *testing.T, code uint32) *turnAwayServer {
	t.Helper()
	s := &turnAwayServer{loopback: listenLoopback(t), code: code}
	serveEach(t, s.ln, s.serve)
	return s
}

func (s *turnAwayServer) serve(c net.Conn) {
	index := map[uint32]int64{} // each stream's request, counted from 0 across connections
	serveH2Requests(c, nil, func(write h2Write, stream uint32) (starve bool) {
		index[stream] = s.requests.Add(1) - 1
		if index[stream] == 1 {
			write(1, 5, stream, []byte{0x08, 3, '5', '0', '3'}) // ":status: 503", the stream ended
		}
		return index[stream] == 1
	}, func(write h2Write, stream uint32, body []byte) {
		cr, _ := parseChatRequest(body)
		s.billed.Add(int64(reservation(string(body), int(cr.MaxOutput))))
		switch {
		case index[stream] > 0:
			write(1, 4, stream, []byte{0x88}) // ":status: 200"
			write(0, 1, stream, fmt.Appendf(nil, `{"id":"x","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(body), cr.MaxOutput))
		case s.code != 0:
			var code [4]byte
			binary.BigEndian.PutUint32(code[:], s.code)
			write(3, 0, stream, code[:])
		default:
			write(7, 0, 0, make([]byte, 8)) // GOAWAY, last stream 0
		}
	})
}

// h2Write writes one HTTP/2 frame to a connection, safe for concurrent use.
type h2Write func(typ, flags byte, stream uint32, p []byte)

// serveH2Requests serves c, a client's HTTP/2 connection (h2c, prior
// knowledge), frame by frame, until it fails or ends: it sends settings
// (a SETTINGS frame's payload; nil for none) and acknowledges the
// client's, calls head with each request's HEADERS, credits the window of
// every DATA frame read, the stream's too unless head said to starve it
// (its body then goes unread and unanswered here), and calls body with
// each request's body once whole.
func serveH2Requests(c net.Conn, settings []byte, head func(write h2Write, stream uint32) (starve bool), body func(write h2Write, stream uint32, body []byte)) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := io.ReadFull(r, make([]byte, 24)); err != nil { // the preface
		return
	}
	var mu sync.Mutex // guards writes to c
	write := func(typ, flags byte, stream uint32, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		h2Frame(c, typ, flags, stream, p)
	}
	write(4, 0, 0, settings)
	bodies := map[uint32][]byte{}
	starved := map[uint32]bool{}
	for {
		typ, flags, stream, p, err := readH2Frame(r)
		if err != nil {
			return
		}
		switch typ {
		case 4: // SETTINGS
			if flags&1 == 0 {
				write(4, 1, 0, nil)
			}
		case 1: // HEADERS: the request's, skipped
			bodies[stream] = []byte{}
			starved[stream] = head(write, stream)
		case 0: // DATA
			var inc [4]byte
			binary.BigEndian.PutUint32(inc[:], uint32(len(p)))
			if len(p) > 0 {
				write(8, 0, 0, inc[:])
			}
			if starved[stream] {
				continue
			}
			if len(p) > 0 {
				write(8, 0, stream, inc[:])
			}
			bodies[stream] = append(bodies[stream], p...)
			if flags&1 != 0 {
				b := bodies[stream]
				delete(bodies, stream)
				body(write, stream, b)
			}
		}
	}
}

// The HTTP/2 case of TestBudgetChargesTheWriteLostBeforeAResendAnsweredEarly:
// net/http sends a request again on a second reservation of the Budget's
// when the server turns its stream away after reading it (REFUSED_STREAM,
// PROTOCOL_ERROR, a GOAWAY past it), and a server that answers the resend
// 503 before its body is written whole left the first write, which a
// server that lies may have billed, uncharged: billed 3 reservations of a
// 1 MiB body ($3.145968) against a Limit of 2 ($2.097312) before 370dfce.
func TestBudgetChargesAStreamTurnedAwayBeforeAResendAnsweredEarly(t *testing.T) {
	for _, c := range []struct {
		name string
		code uint32
	}{{"REFUSED_STREAM", 7}, {"PROTOCOL_ERROR", 1}, {"GOAWAY", 0}} {
		t.Run(c.name, func(t *testing.T) {
			s := newTurnAwayServer(t, c.code)
			tr := h2cTransport(t)
			body := largeChat(1 << 20)
			r, _ := newTestRetrier(t, fastRetries)
			b := newTestBudget(t, BudgetConfig{Limit: 2 * reservation(body, 5), MaxWait: -1})
			client := &http.Client{Transport: Chain(tr, r, b), Timeout: 10 * time.Second}

			for range 2 {
				req, err := http.NewRequest(http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(body))
				require.NoError(t, err)
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}

			billed := Money(s.billed.Load())
			t.Logf("requests %d, billed %v, charged %v, Limit %v", s.requests.Load(), billed, b.Spent(), b.Limit())
			assert.GreaterOrEqual(t, s.requests.Load(), int64(3), "the call, net/http's resend and the Retrier's retry")
			assert.LessOrEqual(t, billed, b.Spent(), "every write the server read is charged")
			assert.LessOrEqual(t, billed, b.Limit())
		})
	}
}
