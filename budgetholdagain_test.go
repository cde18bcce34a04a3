package httpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Found in review of the second reservation (holdAgain). A caller's trace
// that takes 1xx responses makes net/http ignore the Budget's bound on
// them, and the Budget went on counting: past 65,280 of them the count
// carried into the flag of a second hold, and the attempt released twice
// what it held, the window admitting more than its Limit.
func TestBudgetCountOfInformationalResponsesStaysInItsBits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		w := bufio.NewWriter(c)
		for range 255 * 256 {
			w.WriteString("HTTP/1.1 103 Early Hints\r\n\r\n")
		}
		body := `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		w.Flush()
		io.Copy(io.Discard, c)
	}()
	var reserved Money
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(writeOnceBody, 5), OnSettle: func(s Settlement) { reserved = s.Reserved }})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: Chain(tr, b)}
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil }})
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+ln.Addr().String()+"/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	settled, held, _ := b.totals()
	assert.Equal(t, reservation(writeOnceBody, 5), reserved)
	assert.Zero(t, held)
	assert.LessOrEqual(t, b.Remaining(), b.Limit()-settled)
}

// A GetBody after the attempt settled (a caller that reads a failed
// request again through resp.Request, after a 103 and a 500) held a second
// reservation that nothing released.
func TestBudgetGetBodyAfterTheAttemptSettledHoldsNothing(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusInternalServerError)
	})
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(writeOnceBody, 5)})
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	_, err = resp.Request.GetBody()
	assert.ErrorIs(t, err, errWrittenOnce)
	_, held, _ := b.totals()
	assert.Zero(t, held)
}

// resendCut plays net/http's trace of a stream turned away whole, its
// resend begun on a second reservation, and the attempt's end while the
// resend's body is being written (HTTP/2 goes on writing it).
type resendCut struct{}

func (resendCut) RoundTrip(r *http.Request) (*http.Response, error) {
	tr := httptrace.ContextClientTrace(r.Context())
	tr.GetConn("x:443")
	tr.WroteHeaders()
	io.Copy(io.Discard, r.Body)
	tr.WroteRequest(httptrace.WroteRequestInfo{}) // written whole, then turned away
	body, err := r.GetBody()
	if err != nil {
		return nil, err
	}
	defer body.Close()
	tr.GetConn("x:443")
	tr.WroteHeaders()
	return nil, context.DeadlineExceeded
}

// Both writes may reach the provider whole: both are charged.
func TestBudgetChargesAResendBeingWrittenWhenTheAttemptEnds(t *testing.T) {
	var s Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(writeOnceBody, 5), OnSettle: func(x Settlement) { s = x }})
	req, err := http.NewRequest("POST", "https://x/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	_, err = (&http.Client{Transport: Chain(resendCut{}, b)}).Do(req)
	require.Error(t, err)
	assert.Equal(t, 2*reservation(writeOnceBody, 5), s.Charged)
	assert.Equal(t, 2*reservation(writeOnceBody, 5), s.Reserved)
	_, held, _ := b.totals()
	assert.Zero(t, held)
}

// slowRefusingStore is a shared store whose reservations after the first
// take a while and find no room.
type slowRefusingStore struct {
	*MemoryBudgetStore
	mu    sync.Mutex
	calls int
}

func (s *slowRefusingStore) Reserve(ctx context.Context, r Reservation, limit Money) (ReserveResult, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	if n > 1 {
		time.Sleep(20 * time.Millisecond)
		return ReserveResult{Window: r.Window}, nil
	}
	return s.MemoryBudgetStore.Reserve(ctx, r, limit)
}

// getBodyTwice calls the attempt's GetBody from two goroutines at once
// after a write turned away, and reports how many got a body.
type getBodyTwice struct{ got chan int }

func (g getBodyTwice) RoundTrip(r *http.Request) (*http.Response, error) {
	tr := httptrace.ContextClientTrace(r.Context())
	tr.GetConn("x:443")
	tr.WroteHeaders()
	io.Copy(io.Discard, r.Body)
	tr.WroteRequest(httptrace.WroteRequestInfo{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	bodies := 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if body, err := r.GetBody(); err == nil {
				body.Close()
				mu.Lock()
				bodies++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	g.got <- bodies
	return nil, io.ErrUnexpectedEOF
}

// Two GetBody calls at once: the one that waited for the other's hold,
// which failed, got a body without a hold.
func TestBudgetGetBodyCallsAtOnceShareOneHold(t *testing.T) {
	store := &slowRefusingStore{MemoryBudgetStore: NewMemoryBudgetStore()}
	b := newTestBudget(t, BudgetConfig{Limit: 10 * reservation(writeOnceBody, 5), Store: store, Lease: time.Minute})
	got := make(chan int, 1)
	req, err := http.NewRequest("POST", "https://x/v1/chat/completions", strings.NewReader(writeOnceBody))
	require.NoError(t, err)
	_, err = (&http.Client{Transport: Chain(getBodyTwice{got}, b)}).Do(req)
	require.Error(t, err)
	assert.Zero(t, <-got, "no room for a second hold: no resend")
	_, held, err := store.Totals(context.Background(), "lifetime")
	require.NoError(t, err)
	assert.Zero(t, held)
}
