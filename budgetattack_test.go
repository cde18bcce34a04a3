package httpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// billingServer is a loopback provider that bills every attempt it
// receives (once it has read its body) and answers it with one of the
// faults in turn: what a provider may bill for it, by attempt ID (the
// X-Attempt header a layer below the Budget sets).
type billingServer struct {
	srv    *httptest.Server
	turn   atomic.Int64
	mu     sync.Mutex
	billed map[int64]Money
}

// The answers billingServer gives, in turn.
const (
	billJSON          = iota // usage as billed
	billStream               // a stream, its usage chunk, [DONE]
	billStreamCut            // a stream cut before its usage chunk: billed in full
	billReset                // the connection reset once the request is read: billed in full
	billStall                // headers and a chunk, then nothing until the client gives up: billed in full
	billNegative             // a negative count: billed in full
	billHuge                 // a count past any request: billed in full, the usage a lie
	billMissing              // no usage: billed in full
	billSmaller              // usage below the reservation, as billed
	billUnavailable          // 503: not billed
	billLarger               // usage above the reservation (no max_tokens bounds it), as billed
	billStreamCutLate        // a stream cut after its usage chunk, before [DONE]: billed its usage
	billKinds
)

// attackPrompt is the prompt tokens the server bills an attempt: fewer
// than the body's bytes, the Budget's bound.
const attackPrompt = 40

func newBillingServer(t *testing.T, maxTokens int) *billingServer {
	s := &billingServer{billed: make(map[int64]Money)}
	full := Money(attackPrompt)*Dollar/1_000_000 + Money(maxTokens)*2*Dollar/1_000_000
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		id, _ := strconv.ParseInt(r.Header.Get("X-Attempt"), 10, 64)
		kind := s.turn.Add(1) % billKinds
		bill := func(prompt, completion int) {
			s.mu.Lock()
			s.billed[id] += Money(prompt)*Dollar/1_000_000 + Money(completion)*2*Dollar/1_000_000
			s.mu.Unlock()
		}
		stream := strings.Contains(string(body), `"stream":true`)
		switch kind {
		case billUnavailable:
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case billSmaller:
			bill(attackPrompt/2, maxTokens/2)
		case billLarger:
			bill(attackPrompt, 3*maxTokens)
		case billStreamCutLate:
			bill(attackPrompt, maxTokens)
		default:
			s.mu.Lock()
			s.billed[id] += full
			s.mu.Unlock()
		}
		usage := func(prompt, completion string) string {
			return `{"prompt_tokens":` + prompt + `,"completion_tokens":` + completion + `}`
		}
		var u string
		switch kind {
		case billNegative:
			u = usage("-5", strconv.Itoa(maxTokens))
		case billHuge:
			u = usage(strconv.Itoa(attackPrompt), "2000000000")
		case billMissing:
		case billSmaller:
			u = usage(strconv.Itoa(attackPrompt/2), strconv.Itoa(maxTokens/2))
		case billLarger:
			u = usage(strconv.Itoa(attackPrompt), strconv.Itoa(3*maxTokens))
		default:
			u = usage(strconv.Itoa(attackPrompt), strconv.Itoa(maxTokens))
		}
		hijack := func() (io.Closer, *bufio.ReadWriter) {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			return conn, rw
		}
		switch {
		case kind == billReset:
			conn, _ := hijack()
			conn.Close()
		case kind == billStall:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		case stream || kind == billStreamCut || kind == billStreamCutLate:
			conn, rw := hijack()
			fmt.Fprint(rw, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
			fmt.Fprint(rw, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n")
			if kind != billStreamCut {
				if u != "" {
					fmt.Fprint(rw, "data: {\"choices\":[],\"usage\":"+u+"}\n\n")
				}
				if kind != billStreamCutLate {
					fmt.Fprint(rw, "data: [DONE]\n\n")
				}
			}
			rw.Flush()
			conn.Close()
		default:
			w.Header().Set("Content-Type", "application/json")
			if u == "" {
				fmt.Fprint(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`)
			} else {
				fmt.Fprint(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":`+u+`}`)
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// attemptLedger ties each attempt the Budget sends on to an ID the server
// bills it under, and gathers the Budget's settlements by that ID.
type attemptLedger struct {
	attemptStamps
	mu      sync.Mutex
	settled map[int64]Settlement
	missing int // attempts charged though never sent on, or settled twice
}

func newAttemptLedger() *attemptLedger {
	return &attemptLedger{attemptStamps: newAttemptStamps(), settled: make(map[int64]Settlement)}
}

// attemptStamps names each attempt a Budget sends on. Its stamp, the layer
// right below the Budget, ties the request the Budget sent on (which its
// Settlement holds) to an ID, and sends on a copy with the ID in its
// X-Attempt header. It does not set the header on the Budget's request:
// the Retrier's attempts share its header, which net/http may still be
// reading for an earlier attempt (an HTTP/2 stream whose attempt timed out).
type attemptStamps struct {
	next    atomic.Int64
	stampMu sync.Mutex
	ids     map[*http.Request]int64
}

func newAttemptStamps() attemptStamps {
	return attemptStamps{ids: make(map[*http.Request]int64)}
}

func (a *attemptStamps) stamp(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		id := a.next.Add(1)
		a.stampMu.Lock()
		a.ids[req] = id
		a.stampMu.Unlock()
		r := *req
		r.Header = req.Header.Clone()
		r.Header.Set("X-Attempt", strconv.FormatInt(id, 10))
		return next.RoundTrip(&r)
	})
}

// idOf returns the ID stamp gave req, a request the Budget sent on.
func (a *attemptStamps) idOf(req *http.Request) (int64, bool) {
	a.stampMu.Lock()
	defer a.stampMu.Unlock()
	id, ok := a.ids[req]
	return id, ok
}

func (l *attemptLedger) onSettle(s Settlement) {
	if s.Charged == 0 {
		// Released (an error status, or never sent on: its caller gave
		// up while it waited for room).
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.idOf(s.Request)
	if _, dup := l.settled[id]; !ok || dup {
		l.missing++
		return
	}
	l.settled[id] = s
}

// check asserts the Budget's promise: every attempt the server billed was
// charged at least what it billed, and no window was charged more than
// limit, but for the charges above their reservations (answers longer
// than the reservation), which are charged in full.
func (l *attemptLedger) check(t *testing.T, s *billingServer, limit Money) (windows int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Zero(t, l.missing, "charges of attempts the Budget never sent on, or settled twice")
	for id, billed := range s.billed {
		st, ok := l.settled[id]
		if !assert.True(t, ok, "attempt %d was billed %v and never settled", id, billed) {
			continue
		}
		if billed > st.Reserved && !st.UsageKnown && st.Usage.noTokens() {
			// An answer longer than its reservation, cut before its usage
			// (the caller gave up): the Budget could not see past the
			// reservation, which it charges (see BudgetConfig.OutputReserve).
			assert.GreaterOrEqual(t, st.Charged, st.Reserved, "attempt %d: billed %v, charged %+v", id, billed, st)
			continue
		}
		assert.GreaterOrEqual(t, st.Charged, billed, "attempt %d: billed %v, charged %+v", id, billed, st)
	}
	charged, beyond := make(map[string]Money), make(map[string]Money)
	for _, st := range l.settled {
		charged[st.Window] += st.Charged
		beyond[st.Window] += max(st.Charged-st.Reserved, 0)
	}
	for w, c := range charged {
		if !assert.LessOrEqual(t, c, limit+beyond[w], "window %s (of which %v beyond reservations)", w, beyond[w]) {
			for id, st := range l.settled {
				if st.Window == w {
					t.Logf("  attempt %d: reserved %v, charged %v, usage known %v, billed %v", id, st.Reserved, st.Charged, st.UsageKnown, s.billed[id])
				}
			}
		}
	}
	return len(charged)
}

// Fifty callers send through a Retrier and a Budget whose windows last 3
// ms of an injected clock, which moves on every few requests, to a server
// that bills every attempt it receives and answers with every fault in
// turn: usage, streams, streams cut before and after their usage, resets
// after the request was read, stalled bodies the caller's deadline ends,
// usage that lies (negative, huge, missing), usage above the
// reservation, 503s. Every attempt billed is charged at least its bill,
// and no window is charged more than its Limit but for the answers that
// cost more than they reserved. The same with a shared store's leased
// reservations.
func TestBudgetAttackedAcrossWindowsFaultsAndRetriesChargesEveryBill(t *testing.T) {
	for _, leased := range []bool{false, true} {
		t.Run(fmt.Sprintf("leased=%v", leased), func(t *testing.T) {
			const maxTokens = 20
			s := newBillingServer(t, maxTokens)
			ledger := newAttemptLedger()
			var clock atomic.Int64
			clock.Store(time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
			body := func(i int) string {
				return fmt.Sprintf(`{"model":"m","max_tokens":%d,"stream":%v,"messages":[{"role":"user","content":"hello there, number %03d"}]}`, maxTokens, i%2 == 0, i)
			}
			one := reservation(body(0), maxTokens)
			limit := 4*one + one/2
			cfg := BudgetConfig{Limit: limit, Window: 3 * time.Millisecond, MaxWait: 2 * time.Millisecond, OnSettle: ledger.onSettle}
			if leased {
				// A shared store's path: reservations by ID, with a lease.
				// (Leases shorter than a stalled attempt lapse on this test's
				// loaded machines when the whole process stalls past them,
				// as BudgetConfig.Lease says; renewal has tests of its own.)
				cfg.Store, cfg.Lease = newMemoryBudgetStore(readClock), time.Second
			}
			b := newTestBudget(t, cfg)
			b.now = now
			r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, AttemptTimeout: 30 * time.Millisecond})
			require.NoError(t, err)
			base := s.srv.Client().Transport.(*http.Transport).Clone()
			t.Cleanup(base.CloseIdleConnections)
			client := &http.Client{Transport: Chain(base, r, b, LayerFunc(ledger.stamp))}

			var sent atomic.Int64
			hammer(50, 8, func() {
				i := int(sent.Add(1))
				if i%7 == 0 {
					clock.Add(int64(time.Millisecond))
				}
				// The caller's deadline ends a stalled body: the Retrier's
				// attempt timeout bounds the wait for headers alone.
				ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "POST", s.srv.URL+"/v1/chat/completions", strings.NewReader(body(i)))
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
			windows := ledger.check(t, s, limit)
			_, held, ok := b.totals()
			require.True(t, ok)
			assert.Zero(t, held, "every attempt settled")
			assert.Greater(t, windows, 5, "the run crossed windows")
			t.Logf("%d calls, %d attempts billed over %d windows", sent.Load(), len(s.billed), windows)
		})
	}
}
