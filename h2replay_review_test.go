package httpguard

import (
	"bufio"
	"encoding/binary"
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

// h2Resetter is a loopback HTTP/2 server (h2c, prior knowledge) written
// frame by frame, so that it can reset a stream with any code once it has
// read the request whole: it bills every request body it reads whole at
// bill(body), and answers the first resets of them with RST_STREAM of code,
// the rest with a 200 whose usage is usage; when info is set (a 1xx
// status: "100", "103"), it answers each request's headers with that
// informational response first.
type h2Resetter struct {
	loopback
	code   uint32
	resets atomic.Int64 // how many more streams to reset
	bill   func(body []byte) Money
	usage  string
	billed atomic.Int64
	reads  atomic.Int64
	info   string // the informational status each request's headers get first, if any
}

func newH2Resetter(t *testing.T, code uint32, resets int64, info string, bill func([]byte) Money, usage string) *h2Resetter {
	t.Helper()
	s := &h2Resetter{loopback: listenLoopback(t), code: code, bill: bill, usage: usage, info: info}
	s.resets.Store(resets)
	serveEach(t, s.ln, s.serve)
	return s
}

func h2Frame(w io.Writer, typ, flags byte, stream uint32, payload []byte) error {
	h := make([]byte, 9, 9+len(payload))
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	_, err := w.Write(append(h, payload...))
	return err
}

// readH2Frame reads one HTTP/2 frame from r: its type, flags, stream
// and payload.
func readH2Frame(r io.Reader) (typ, flags byte, stream uint32, p []byte, err error) {
	var h [9]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	typ, flags, stream = h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
	p = make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
	_, err = io.ReadFull(r, p)
	return
}

func (s *h2Resetter) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	preface := make([]byte, 24)
	if _, err := io.ReadFull(r, preface); err != nil {
		return
	}
	var mu sync.Mutex // guards writes to c
	write := func(typ, flags byte, stream uint32, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		h2Frame(c, typ, flags, stream, p)
	}
	write(4, 0, 0, nil) // SETTINGS
	bodies := map[uint32][]byte{}
	for {
		typ, flags, stream, p, err := readH2Frame(r)
		if err != nil {
			return
		}
		end := false
		switch typ {
		case 4: // SETTINGS
			if flags&1 == 0 {
				write(4, 1, 0, nil)
			}
		case 6: // PING
			if flags&1 == 0 {
				write(6, 1, 0, p)
			}
		case 1: // HEADERS: the request's, skipped
			bodies[stream] = []byte{}
			end = flags&1 != 0
			if s.info != "" && !end { // ":status: 1xx", a literal of the static table's :status name
				write(1, 4, stream, append([]byte{0x08, byte(len(s.info))}, s.info...))
			}
		case 0: // DATA
			n := len(p)       // the window it took, padding included
			if flags&8 != 0 { // PADDED
				p = p[1 : len(p)-int(p[0])]
			}
			bodies[stream] = append(bodies[stream], p...)
			end = flags&1 != 0
			if n > 0 { // give the window back
				var inc [4]byte
				binary.BigEndian.PutUint32(inc[:], uint32(n))
				write(8, 0, 0, inc[:])
				write(8, 0, stream, inc[:])
			}
		}
		if !end {
			continue
		}
		body := bodies[stream]
		delete(bodies, stream)
		s.reads.Add(1)
		s.billed.Add(int64(s.bill(body)))
		if s.resets.Add(-1) >= 0 {
			var code [4]byte
			binary.BigEndian.PutUint32(code[:], s.code)
			write(3, 0, stream, code[:]) // RST_STREAM
			continue
		}
		// HEADERS ":status: 200" (HPACK static index 8), then the answer.
		write(1, 4, stream, []byte{0x88})
		write(0, 1, stream, []byte(s.usage))
	}
}

// writeOnceBody is the request these tests send: max_tokens 5 of m.
const writeOnceBody = `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello"}]}`

// budgetRetrying returns a Budget of limit and a client sending through it
// and a Retrier (retries retries) to srv's base transport: the Budget
// outside the Retrier when outside, as recommended otherwise.
func budgetRetrying(t *testing.T, limit Money, retries int, outside bool) (*Budget, *http.Client) {
	t.Helper()
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	r, err := NewRetrier(RetryPolicy{MaxRetries: retries, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	layers := []Layer{r, b}
	if outside {
		layers = []Layer{b, r}
	}
	return b, &http.Client{Transport: Chain(base, layers...), Timeout: 10 * time.Second}
}

// h2cTransport is a net/http transport speaking HTTP/2 without TLS.
func h2cTransport(t *testing.T) *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// net/http's HTTP/2 transport sends a request again, from its GetBody, when
// the server resets the stream with PROTOCOL_ERROR or REFUSED_STREAM, even
// a POST without an Idempotency-Key, and even once the request was written
// whole (golang/go#47635): a server that read it, and may have run and
// billed it, then reset it gets it up to seven times. Each write must be
// within the Limit, not only charged after the fact.
func TestBudgetLimitHoldsAgainstHTTP2ReplaysOfAResetStream(t *testing.T) {
	const body = writeOnceBody
	for _, c := range []struct {
		name   string
		code   uint32
		stack  bool
		info   string // the informational response the server sends first
		expect bool   // the request says Expect: 100-continue
	}{
		{"PROTOCOL_ERROR", 1, false, "", false}, {"REFUSED_STREAM", 7, false, "", false},
		{"PROTOCOL_ERROR/stack", 1, true, "", false},
		{"PROTOCOL_ERROR/100-continue", 1, false, "100", true}, // a response began, but before the write
		// An informational response began, which answers nothing: the
		// server may still run the request, bill it and reset the stream.
		{"PROTOCOL_ERROR/103-early-hints", 1, false, "103", false},
		{"PROTOCOL_ERROR/103-early-hints/stack", 1, true, "103", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newH2Resetter(t, c.code, 3, c.info, func(b []byte) Money { return reservation(string(b), 5) },
				`{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}`)
			limit := 2 * reservation(body, 5) // room for this request and one retry
			b := newTestBudget(t, BudgetConfig{Limit: limit})
			layers := []Layer{b}
			if c.stack {
				r, err := NewRetrier(RetryPolicy{MaxRetries: 5, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
				require.NoError(t, err)
				l, err := NewLimiter(LimitConfig{TokensPerMinute: 6_000_000})
				require.NoError(t, err)
				layers = []Layer{r, b, l}
			}
			tr := h2cTransport(t)
			tr.ExpectContinueTimeout = time.Second
			client := &http.Client{Transport: Chain(tr, layers...), Timeout: 10 * time.Second}
			req, err := http.NewRequest(http.MethodPost, srv.URL()+"/v1/chat/completions", strings.NewReader(body))
			require.NoError(t, err)
			if c.expect {
				req.Header.Set("Expect", "100-continue")
			}

			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			t.Logf("err %v; the server read the request %d times; billed %v, charged %v, limit %v",
				err, srv.reads.Load(), Money(srv.billed.Load()), b.Spent(), limit)
			assert.Positive(t, srv.billed.Load())
			assert.LessOrEqual(t, Money(srv.billed.Load()), b.Spent(), "every write charged")
			assert.LessOrEqual(t, Money(srv.billed.Load()), limit, "the provider may bill no more than the Limit")
		})
	}
}

// A Retrier placed below the Budget (not the recommended order) resends a
// request whose write was lost under the Budget's one reservation: each
// write the provider may bill must still be within the Limit.
func TestBudgetLimitHoldsAgainstARetrierBelowItResendingLostWrites(t *testing.T) {
	const body = writeOnceBody
	var billed, reads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reads.Add(1)
		billed.Add(int64(reservation(string(b), 5)))
		panic(http.ErrAbortHandler) // read whole, then the connection is cut
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	limit := 2 * reservation(body, 5)
	b, client := budgetRetrying(t, limit, 5, true)

	_, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	require.Error(t, err)
	t.Logf("the server read the request %d times; billed %v, charged %v, limit %v", reads.Load(), Money(billed.Load()), b.Spent(), limit)
	assert.LessOrEqual(t, Money(billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider may bill no more than the Limit")
}

// net/http returns a 101 as a final answer. It is no error status: the
// server read the request before it took the connection, and may bill it.
func TestBudgetChargesAnAttemptAnswered101ItsReservation(t *testing.T) {
	const body = writeOnceBody
	var billed atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		billed.Add(int64(reservation(string(b), 5)))
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\n")
		bw.Flush()
	}))
	t.Cleanup(srv.Close)
	limit := reservation(body, 5)
	b, client := budgetRetrying(t, limit, 2, false)

	for range 2 {
		resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err == nil {
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	t.Logf("billed %v, charged %v, limit %v", Money(billed.Load()), b.Spent(), limit)
	assert.Positive(t, billed.Load())
	assert.LessOrEqual(t, Money(billed.Load()), b.Spent(), "every write charged")
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider may bill no more than the Limit")
}

// hintingServer is a loopback HTTP/1.1 server that answers its one
// connection's request, once read whole, with hints 103 Early Hints, then
// with answer if it is not empty (and closes the connection).
func hintingServer(t *testing.T, hints int, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		for range hints {
			if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"); err != nil {
				return
			}
		}
		if answer != "" {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(answer), answer)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// Once the Budget hears of informational responses (see got1xxResponse),
// net/http leaves their bounding to it: a server that sends 103s without
// end gets an error after maxInformational of them, not a client reading
// them until its deadline; the request was written and never answered, so
// it is charged its reservation. As many as the bound allows before the
// answer pass.
func TestBudgetBoundsInformationalResponses(t *testing.T) {
	const usage = `{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}`
	for _, c := range []struct {
		name   string
		hints  int
		answer string
	}{
		{"endless", 10_000, ""},
		{"the most allowed, then the answer", maxInformational, usage},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := hintingServer(t, c.hints, c.answer)
			b := newTestBudget(t, BudgetConfig{Limit: 2 * reservation(writeOnceBody, 5)})
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: b.Wrap(tr), Timeout: 10 * time.Second}

			resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(writeOnceBody))
			if c.answer == "" {
				require.ErrorIs(t, err, errTooManyInformational)
				assert.Equal(t, reservation(writeOnceBody, 5), b.Spent(), "written, never answered: charged its reservation")
				return
			}
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Positive(t, b.Spent())
			assert.Less(t, b.Spent(), reservation(writeOnceBody, 5), "charged its usage, not its reservation")
		})
	}
}
