package httpguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBudgetRefusalSaysTheNeedIsAWorstCaseAndWhenTheWindowResets(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m", 100)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 100) - 1, Period: Daily})
	b.now = func() time.Time { return time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC) }

	_, err := send(t, api.client(t, b), api.srv.URL, body)

	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.True(t, IsRefusal(err))
	msg := err.Error()
	assert.Equal(t, 1, strings.Count(msg, "httpguard:"), msg)
	assert.Contains(t, msg, fmt.Sprintf(`model "m" needs %v but %v remains until 2026-12-01T00:00:00Z`, reservation(body, 100), reservation(body, 100)-1))
	assert.Contains(t, msg, fmt.Sprintf("a worst-case reservation: %d prompt tokens at most and 1 × 100 output tokens from max_tokens; lower max_tokens to need less", len(body)))
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), be.Reset, "when the window resets")

	_, err = send(t, api.client(t, b), api.srv.URL, `{"model":"m","messages":[]}`)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Contains(t, err.Error(), "1 × 4096 output tokens from OutputReserve, as the request sets no max_tokens; set max_tokens to need less")
	require.ErrorAs(t, err, &be)
	assert.False(t, be.MaxTokensSet)
	assert.Equal(t, int64(4096), be.OutputTokens)
	assert.Zero(t, api.hits.Load())
}

func TestBudgetUnknownModelErrorSaysHowToPriceIt(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("gpt-9", 10))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.True(t, IsRefusal(err))
	assert.Contains(t, err.Error(), `httpguard: budget: model "gpt-9" has no price: add it to the price table, or a "*" entry to price every unlisted model: unknown model`)
}

func TestBudgetRefusesWhatItCannotPriceUnlessExempt(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { io.WriteString(w, `{"text":"hello"}`) })
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, err := mw.CreateFormFile("file", "speech.mp3")
	require.NoError(t, err)
	fw.Write([]byte("ID3 not json"))
	require.NoError(t, mw.Close())
	upload := func(c *http.Client) (*http.Response, error) {
		return c.Post(api.srv.URL+"/v1/audio/transcriptions", mw.FormDataContentType(), bytes.NewReader(form.Bytes()))
	}

	closed := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err = upload(api.client(t, closed))
	require.ErrorIs(t, err, ErrUnknownModel, "fail closed by default")
	assert.Contains(t, err.Error(), "BudgetConfig.Exempt")
	assert.Contains(t, err.Error(), `Content-Type "multipart/form-data"`, "what the body is, not only what it is not")
	assert.NotContains(t, err.Error(), "boundary")
	assert.Zero(t, api.hits.Load())

	open := newTestBudget(t, BudgetConfig{Limit: Dollar, Exempt: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/audio/")
	}})
	resp, err := upload(api.client(t, open))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, int64(1), api.hits.Load())
	assert.Zero(t, open.Spent())
	assert.Equal(t, Dollar, open.Remaining())
}

func TestBudgetTellsOnSettleWhatEachAttemptCost(t *testing.T) {
	api := newFakeAPI(t, answerUsage(3, 4))
	var got []Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = append(got, s) }})
	body := chatBody("m", 10)
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NotNil(t, got[0].Request)
	assert.Equal(t, "/v1/chat/completions", got[0].Request.URL.Path)
	got[0].Request = nil
	assert.Equal(t, Settlement{Model: "m", PricedAs: "m", Window: "lifetime", Reserved: reservation(body, 10), Charged: 3*1000 + 4*2000,
		Usage: Usage{InputTokens: 3, OutputTokens: 4}, UsageKnown: true, Settled: 3*1000 + 4*2000}, got[0])
}

func TestBudgetNeverPanicsOnANilURLOrANilResponse(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	req, err := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
	require.NoError(t, err)
	req.URL = nil
	_, err = b.Wrap(cannedTransport{}).RoundTrip(req)
	assert.ErrorContains(t, err, "httpguard: budget: request has no URL")

	nothing := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
	req, err = http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
	require.NoError(t, err)
	_, err = b.Wrap(nothing).RoundTrip(req)
	assert.ErrorContains(t, err, "returned neither a response nor an error")
	assert.Zero(t, b.Remaining()+b.Spent()-Dollar, "settled: nothing left held")

	req, err = http.NewRequest("GET", "http://x/v1/models", nil)
	require.NoError(t, err)
	_, err = b.Wrap(nothing).RoundTrip(req)
	assert.ErrorContains(t, err, "returned neither a response nor an error")
}

func TestBudgetChargesAnErrorFromATransportThatDoesNotSayWhetherItSent(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := chatBody("m", 10)
	failing := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, req.Body) // it may have sent it: nothing tells
		return nil, errors.New("boom")
	})
	req, err := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = b.Wrap(failing).RoundTrip(req)
	require.Error(t, err)
	assert.Equal(t, reservation(body, 10), b.Spent(), "fail safe: the provider may have billed it")

	refusing := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, Refuse(errors.New("no")) })
	req, err = http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = b.Wrap(refusing).RoundTrip(req)
	require.Error(t, err)
	assert.Equal(t, reservation(body, 10), b.Spent(), "a refusal below sent nothing: released")
}

// A shared store where another process died holding money: its lease ends
// and a request waiting for that money goes ahead.
func TestBudgetLeasesFreeADeadProcessesMoney(t *testing.T) {
	const lease = 60 * time.Millisecond
	store := NewMemoryBudgetStore()
	body := chatBody("m", 10)
	limit := reservation(body, 10) * 3 / 2
	res, err := store.Reserve(context.Background(), Reservation{ID: 7, Window: "lifetime", Amount: reservation(body, 10), Lease: lease}, limit)
	require.NoError(t, err)
	require.True(t, res.OK, "the dead process's reservation")

	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: limit, Store: store, Lease: lease, MaxWait: time.Minute})
	b.poll = time.Hour // only the lease's end can wake it
	start := time.Now()
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 30*time.Second, "woken when the dead lease ended, not by MaxWait")
	assert.Equal(t, Money(3000), b.Spent())
}

// A process that dies holding reservations gives them back when their
// leases end, though the provider may bill the attempts it had sent: what
// the provider bills passes the Limit then, by at most what the dead
// process held (doc.go: "One bound holds only while processes live").
func TestBudgetADeadProcessPassesTheLimitByAtMostWhatItHeld(t *testing.T) {
	const lease = time.Minute
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC).UnixNano())
	store := newMemoryBudgetStore(func() time.Time { return time.Unix(0, clock.Load()) })
	body := chatBody("m", 10)
	one := reservation(body, 10)
	limit := 4 * one
	const dead = 2 // attempts in flight when the process died, each billed in full
	for id := range uint64(dead) {
		res, err := store.Reserve(context.Background(), Reservation{ID: 100 + id, Window: "lifetime", Amount: one, Lease: lease}, limit)
		require.NoError(t, err)
		require.True(t, res.OK)
	}
	api := newFakeAPI(t, answerBound) // bills what it answers: each request's reservation
	b := newTestBudget(t, BudgetConfig{Limit: limit, Store: store, Lease: lease, MaxWait: -1})
	client := api.client(t, b)
	live := func() (admitted int) {
		for {
			if _, err := send(t, client, api.srv.URL, body); err != nil {
				require.ErrorIs(t, err, ErrBudgetExceeded)
				return admitted
			}
			admitted++
		}
	}
	assert.Equal(t, 2, live(), "the dead process's holds count while their leases run")
	clock.Add(int64(lease))
	assert.Equal(t, 2, live(), "its money came back when the leases ended")

	billed := Money(dead+api.hits.Load()) * one
	assert.Greater(t, billed, limit, "the provider billed the dead process's attempts too")
	assert.LessOrEqual(t, billed, limit+dead*one, "by at most what the dead process held")
}

// A live Budget renews the leases of its attempts in flight, so that a
// stream outliving many leases stays held; once it is settled the renewals
// stop. The store's clock is injected; the renewal timer's ticks are
// played by calling renew.
func TestBudgetRenewsTheLeasesOfItsAttemptsInFlight(t *testing.T) {
	const lease = time.Minute
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	store := newMemoryBudgetStore(now)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Store: store, Lease: lease})
	gate := make(chan struct{})
	stream := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-gate
		io.WriteString(w, streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a"))
	})
	resp, err := post(stream.client(t, b), stream.srv.URL, `{"model":"m","stream":true,"max_tokens":10,"messages":[]}`)
	require.NoError(t, err)
	held := func() Money {
		_, h, ok := b.totals()
		require.True(t, ok)
		return h
	}
	require.Positive(t, held())
	b.renewals.mu.Lock()
	armed := b.renewals.timer != nil
	b.renewals.mu.Unlock()
	assert.True(t, armed, "a renewal timer runs while an attempt holds a lease")

	for range 15 { // five leases pass, renewed every third of one, as the timer does
		clock.Add(int64(lease / 3))
		b.renewals.renew()
		assert.Positive(t, held(), "renewed: still held")
	}
	close(gate)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Zero(t, held())
	b.renewals.mu.Lock()
	armed = b.renewals.timer != nil
	b.renewals.mu.Unlock()
	assert.False(t, armed, "nothing held, no timer")

	// Without renewals a lease ends.
	res, err := store.Reserve(context.Background(), Reservation{ID: 99, Window: "lifetime", Amount: 5, Lease: lease}, Dollar)
	require.NoError(t, err)
	require.True(t, res.OK)
	clock.Add(int64(lease))
	assert.Zero(t, held())
}

func TestBudgetAdmitsNoMoreThanItsLimitInAnyWindowAtTheBoundary(t *testing.T) {
	body := chatBody("m", 10)
	limit := 5 * reservation(body, 10)
	var mu sync.Mutex
	admitted := map[string]Money{}
	b := newTestBudget(t, BudgetConfig{Limit: limit, Window: 3 * time.Millisecond, MaxWait: -1, OnSettle: func(s Settlement) {
		mu.Lock()
		admitted[s.Window] += s.Charged
		mu.Unlock()
	}})
	rt := b.Wrap(cannedTransport{body: `{"id":"no usage: charged its whole reservation"}`})
	var wg sync.WaitGroup
	var sent atomic.Int64
	stop := time.Now().Add(100 * time.Millisecond)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
				resp, err := rt.RoundTrip(req)
				if err != nil {
					continue
				}
				sent.Add(1)
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	require.Greater(t, len(admitted), 2, "the run crossed window boundaries")
	for w, m := range admitted {
		assert.LessOrEqual(t, m, limit, "window %s", w)
	}
	t.Logf("%d requests over %d windows", sent.Load(), len(admitted))
}

// watchingStore is a shared store that tells waiters when another process
// settles, as a Redis store does with pub/sub.
type watchingStore struct {
	*MemoryBudgetStore
	notices chan struct{}
}

func (s watchingStore) Watch(context.Context, string) <-chan struct{} { return s.notices }

func TestBudgetWaiterWakesWhenTheStoreSaysAnotherProcessSettled(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	body := chatBody("m", 10)
	store := watchingStore{NewMemoryBudgetStore(), make(chan struct{}, 1)}
	limit := reservation(body, 10) * 3 / 2
	b := newTestBudget(t, BudgetConfig{Limit: limit, Store: store})
	b.poll = time.Hour // only the notice can wake it
	waiting := make(chan struct{})
	b.onWait = func() { close(waiting) }
	ctx := context.Background()
	res, err := store.Reserve(ctx, Reservation{ID: 1, Window: "lifetime", Amount: reservation(body, 10)}, limit)
	require.NoError(t, err)
	require.True(t, res.OK)

	done := sendAsync(t, api.client(t, b), api.srv.URL, body)
	<-waiting
	_, err = store.Settle(ctx, "lifetime", 1, 5000) // another process's answer
	require.NoError(t, err)
	store.notices <- struct{}{}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the notice did not wake the waiting request")
	}
}

func TestBudgetReservesEveryCandidateTheProviderBills(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	var got []Settlement
	b.cfg.OnSettle = func(s Settlement) { got = append(got, s) }
	for _, body := range []string{
		`{"model":"m","max_tokens":10,"n":3,"messages":[]}`,
		`{"model":"m","max_tokens":10,"prompt":"x","best_of":5,"n":2}`, // legacy completions: best_of candidates billed
	} {
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.NoError(t, err)
	}
	require.Len(t, got, 2)
	assert.Equal(t, Money(len(`{"model":"m","max_tokens":10,"n":3,"messages":[]}`))*1000+3*10*2000, got[0].Reserved)
	assert.Equal(t, Money(len(`{"model":"m","max_tokens":10,"prompt":"x","best_of":5,"n":2}`))*1000+5*10*2000, got[1].Reserved)
}

func TestBudgetRefusesABodyServersWouldReadDifferently(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	// A Go server reads MAX_TOKENS as max_tokens; a Python one ignores it.
	_, err := send(t, api.client(t, b), api.srv.URL, `{"model":"m","max_tokens":1,"MAX_TOKENS":100000,"messages":[]}`)
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.True(t, IsRefusal(err))
	assert.Contains(t, err.Error(), "servers would read this body differently")
	assert.Zero(t, api.hits.Load())
}

// A request whose context ended before the Budget sent it was never sent:
// net/http gives up before asking for a connection, so the trace says
// nothing, and nothing may be charged for it. Under a Retrier nothing
// counts as an attempt.
func TestBudgetChargesNothingForARequestWhoseContextEndedBeforeSending(t *testing.T) {
	api := newFakeAPI(t, answerUsage(3, 4))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	r, err := NewRetrier(RetryPolicy{MaxRetries: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	require.NoError(t, err)
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	for _, layers := range [][]Layer{{b}, {r, b}} {
		req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 100)))
		require.NoError(t, err)
		_, err = (&http.Client{Transport: Chain(base, layers...)}).Do(req)
		require.ErrorIs(t, err, context.Canceled)
		var re *RetryError
		if errors.As(err, &re) {
			assert.Zero(t, re.Attempts)
			assert.True(t, IsRefusal(err), "nothing was sent")
		}
	}
	assert.Zero(t, api.hits.Load())
	assert.Zero(t, b.Spent(), "nothing was sent, nothing is charged")
	assert.Equal(t, Dollar, b.Remaining(), "nothing is held")
}

// One RoundTrip may write a request many times without an answer (a
// transport that resends it from a Body it kept, not from GetBody, which
// the Budget refuses once a write is lost): their reservations add up past
// what Money holds, and the charge must saturate, not wrap around to
// nothing.
func TestBudgetChargeForManyLostWritesSaturates(t *testing.T) {
	const maxTokens = 108_000_000 // at the dearest price a table allows, close to MaxBudgetLimit
	b := newTestBudget(t, BudgetConfig{Limit: MaxBudgetLimit, Prices: PriceTable{"m": {Output: maxPrice}}})
	var got Settlement
	b.cfg.OnSettle = func(s Settlement) { got = s }
	writes := 0
	resend := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		trace := httptrace.ContextClientTrace(req.Context())
		for range 10 {
			trace.GetConn("example.com:443")
			trace.WroteRequest(httptrace.WroteRequestInfo{})
			writes++
		}
		req.Body.Close()
		return nil, errors.New("connection reset")
	})

	_, err := (&http.Client{Transport: Chain(resend, b)}).Post("https://example.com/v1/chat/completions", "application/json",
		strings.NewReader(chatBody("m", maxTokens)))
	require.Error(t, err)
	require.Equal(t, 10, writes)
	require.Greater(t, got.Reserved, maxMoney/10, "ten reservations overflow Money")
	assert.Equal(t, 2*MaxBudgetLimit, got.Charged, "saturated")
	assert.Equal(t, 2*MaxBudgetLimit, b.Spent())
}
