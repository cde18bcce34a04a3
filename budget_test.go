package httpguard

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testPrices make costs easy to check: a prompt token costs 1,000
// nano-dollars, a cached one 100, an output token 2,000.
var testPrices = PriceTable{"m": {Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar}}

func chatBody(model string, maxTokens int) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":%d,"messages":[{"role":"user","content":"hello"}]}`, model, maxTokens)
}

// reservation is what a budget with testPrices reserves for body.
func reservation(body string, maxTokens int) Money {
	return Money(len(body))*1000 + Money(maxTokens)*2000
}

// fakeAPI is a loopback OpenAI-compatible server that counts the requests
// reaching it and answers with answer.
type fakeAPI struct {
	srv    *httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	bodies []string
}

func newFakeAPI(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeAPI {
	t.Helper()
	api := &fakeAPI{}
	api.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		api.mu.Lock()
		api.bodies = append(api.bodies, string(body))
		api.mu.Unlock()
		answer(w, r, body)
	}))
	t.Cleanup(api.srv.Close)
	return api
}

// client returns a client whose transport is layer over the server's.
func (api *fakeAPI) client(t *testing.T, layer Layer) *http.Client {
	t.Helper()
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: Chain(base, layer)}
}

func (api *fakeAPI) lastBody() string {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.bodies[len(api.bodies)-1]
}

func answerUsage(prompt, completion int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, prompt, completion)
	}
}

// answerBound answers with usage equal to the request's reservation: the
// prompt bound (its byte length) and all of max_tokens.
func answerBound(w http.ResponseWriter, r *http.Request, body []byte) {
	cr, _ := parseChatRequest(body)
	answerUsage(len(body), int(cr.MaxOutput))(w, r, body)
}

func newTestBudget(t *testing.T, c BudgetConfig) *Budget {
	t.Helper()
	if c.Prices == nil {
		c.Prices = testPrices
	}
	b, err := NewBudget(c)
	require.NoError(t, err)
	return b
}

// readThrough posts body to path on api through b, with the header's
// name-value pairs, and returns what the caller read.
func readThrough(t *testing.T, api *fakeAPI, b *Budget, path, body string, header ...string) string {
	t.Helper()
	req, err := http.NewRequest("POST", api.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(got)
}

func post(client *http.Client, url, body string) (*http.Response, error) {
	return client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
}

// send posts body, reads the answer to its end and closes it.
func send(t *testing.T, client *http.Client, url, body string) (string, error) {
	t.Helper()
	resp, err := post(client, url, body)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b), nil
}

func TestBudgetChargesTheReportedUsageExactly(t *testing.T) {
	api := newFakeAPI(t, answerUsage(12, 7))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	client := api.client(t, b)

	_, err := send(t, client, api.srv.URL, chatBody("m", 100))
	require.NoError(t, err)
	assert.Equal(t, Money(12*1000+7*2000), b.Spent())
	assert.Equal(t, Dollar-Money(12*1000+7*2000), b.Remaining())
}

func TestBudgetChargesCachedTokensAtTheCachedPrice(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		io.WriteString(w, `{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":60}}}`)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("m", 10))
	require.NoError(t, err)
	assert.Equal(t, Money(40*1000+60*100+1*2000), b.Spent())
}

func TestBudgetRefusesBeforeSendingWhenTheCapIsReached(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m", 100)
	b := newTestBudget(t, BudgetConfig{Limit: 2*reservation(body, 100) + 1})
	client := api.client(t, b)

	for range 2 {
		_, err := send(t, client, api.srv.URL, body)
		require.NoError(t, err)
	}
	_, err := send(t, client, api.srv.URL, body)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrBudgetExceeded)
	var uerr *url.Error
	assert.ErrorAs(t, err, &uerr, "net/http wraps transport errors")
	assert.Contains(t, err.Error(), fmt.Sprintf(`httpguard: budget: model "m" needs %v but $0.000000001 remains; the budget has no window and never resets: budget exceeded`, reservation(body, 100)))
	var be *BudgetError
	require.ErrorAs(t, err, &be, "a caller reads the refusal without parsing its message")
	assert.Equal(t, BudgetError{Model: "m", Need: reservation(body, 100), Remaining: 1,
		PromptTokens: int64(len(body)), Choices: 1, OutputTokens: 100, MaxTokensSet: true}, *be)
	assert.Equal(t, int64(2), api.hits.Load(), "the refused request must not reach the server")
	assert.Equal(t, 2*reservation(body, 100), b.Spent())
}

func TestBudgetNeverOverspendsUnderConcurrency(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m", 50)
	cost := reservation(body, 50)
	limit := 37*cost + cost/2
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	client := api.client(t, b)

	var wg sync.WaitGroup
	var served, refused atomic.Int64
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post(client, api.srv.URL, body)
			if err != nil {
				if errors.Is(err, ErrBudgetExceeded) {
					refused.Add(1)
				}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			served.Add(1)
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(37), served.Load())
	assert.Equal(t, int64(1000-37), refused.Load())
	assert.Equal(t, int64(37), api.hits.Load())
	assert.Equal(t, 37*cost, b.Spent(), "not one nano-dollar more than the cap allows")
	assert.Less(t, limit-b.Spent(), cost, "waste is under one request's worth")
}

func TestBudgetStaysUnderTheCapWhenAnswersCostLessThanReserved(t *testing.T) {
	// Answers cost far less than their reservations: requests refused only
	// because others hold reservations would waste most of the cap, so they
	// wait for those to settle instead.
	api := newFakeAPI(t, answerUsage(10, 5))
	body := chatBody("m", 50)
	cost := Money(10*1000 + 5*2000)
	limit := 20 * reservation(body, 50)
	b := newTestBudget(t, BudgetConfig{Limit: limit})
	client := api.client(t, b)

	var wg sync.WaitGroup
	var refused, failed atomic.Int64
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post(client, api.srv.URL, body)
			switch {
			case errors.Is(err, ErrBudgetExceeded):
				refused.Add(1)
				return
			case err != nil:
				failed.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	require.Zero(t, failed.Load())
	assert.Equal(t, 500-api.hits.Load(), refused.Load())
	assert.Equal(t, Money(api.hits.Load())*cost, b.Spent())
	assert.LessOrEqual(t, b.Spent(), limit, "no overspend")
	assert.Less(t, limit-b.Spent(), reservation(body, 50), "waste is under one request's reservation")
}

// newGatedAPI is a loopback API whose answers wait until release is
// called; each request's arrival is sent on arrived.
func newGatedAPI(t *testing.T) (api *fakeAPI, arrived <-chan struct{}, release func()) {
	t.Helper()
	arrivals := make(chan struct{}, 100)
	gate := make(chan struct{})
	var once sync.Once
	api = newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		arrivals <- struct{}{}
		<-gate
		answerUsage(1, 1)(w, r, body)
	})
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the server closes: cleanups run last first
	return api, arrivals, release
}

// sendAsync sends body in the background; the result arrives on the
// returned channel.
func sendAsync(t *testing.T, client *http.Client, url, body string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := send(t, client, url, body)
		errc <- err
	}()
	return errc
}

func TestBudgetWaitsForRequestsInFlightInsteadOfRefusing(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2})
	waiting := make(chan struct{})
	b.onWait = func() { close(waiting) }
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	second := sendAsync(t, client, api.srv.URL, body) // does not fit beside the first
	<-waiting
	assert.Equal(t, int64(1), api.hits.Load(), "the waiting request is not sent")
	release()
	require.NoError(t, <-first)
	require.NoError(t, <-second, "the first settled low, leaving room")
	assert.Equal(t, int64(2), api.hits.Load())
	assert.Equal(t, 2*Money(1000+2000), b.Spent())
}

func TestBudgetGivesUpWaitingAfterMaxWait(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, MaxWait: 20 * time.Millisecond})
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	_, err := send(t, client, api.srv.URL, body)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Contains(t, err.Error(), "after waiting 20ms (MaxWait) for attempts in flight: budget exceeded")
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.EqualError(t, be.Err, "after waiting 20ms (MaxWait) for attempts in flight", "Err says why the wait ended")
	assert.Equal(t, int64(1), api.hits.Load(), "nothing of the refused request was sent")
	release()
	require.NoError(t, <-first)
	assert.Equal(t, Money(1000+2000), b.Spent())
}

func TestBudgetGivesUpWaitingWhenTheContextEnds(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, MaxWait: time.Hour})
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, int64(1), api.hits.Load(), "nothing of the refused request was sent")
	release()
	require.NoError(t, <-first)
}

// A caller that gives up while its request waits for room has not been
// refused by the budget: as with the Limiter, its error is the context's,
// not ErrBudgetExceeded (which a deadline, like MaxWait, still gives).
func TestBudgetWaitCanceledByTheCallerIsNotBudgetExceeded(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, MaxWait: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	b.onWait = cancel
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrBudgetExceeded)
	assert.True(t, IsRefusal(err), "nothing was sent")
	assert.Equal(t, 1, strings.Count(err.Error(), "httpguard:"), err.Error())
	assert.Equal(t, int64(1), api.hits.Load())
	release()
	require.NoError(t, <-first)
}

func TestBudgetRefusesAtOnceWhatCannotFitEvenWithNothingInFlight(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	small, large := chatBody("m", 1), chatBody("m", 100)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(large, 100) - 1, MaxWait: time.Hour})
	b.onWait = func() { t.Error("the request waited") }
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, small)
	<-arrived
	_, err := send(t, client, api.srv.URL, large) // waiting would take an hour
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.NotContains(t, err.Error(), "waiting")
	release()
	require.NoError(t, <-first)
}

func TestBudgetWithNegativeMaxWaitRefusesAtOnce(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, MaxWait: -1})
	b.onWait = func() { t.Error("the request waited") }
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	_, err := send(t, client, api.srv.URL, body)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	release()
	require.NoError(t, <-first)
}

func TestBudgetWaiterProceedsWhenTheWindowEnds(t *testing.T) {
	api, arrived, release := newGatedAPI(t)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: reservation(body, 10) * 3 / 2, Window: time.Hour, MaxWait: time.Hour})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 25, 10, 59, 59, 0, time.UTC).UnixNano())
	b.now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	b.onWait = func() { clock.Store(time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC).UnixNano()) }
	client := api.client(t, b)

	first := sendAsync(t, client, api.srv.URL, body)
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a bound should the window's end go unnoticed
	defer cancel()
	second := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		second <- err
	}()
	select {
	case <-arrived: // the first is still in flight: the new window made room
	case err := <-second:
		t.Fatalf("the second request ended without being sent: %v", err)
	}
	release()
	require.NoError(t, <-first)
	require.NoError(t, <-second)
	assert.Equal(t, Money(1000+2000), b.Spent(), "the second is in the new window")
}

func TestBudgetWaiterSeesSettlementsOtherProcessesMakeInASharedStore(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	body := chatBody("m", 10)
	store := NewMemoryBudgetStore() // shared with another process, played by the test
	limit := reservation(body, 10) * 3 / 2
	b := newTestBudget(t, BudgetConfig{Limit: limit, Store: store})
	b.poll = time.Millisecond
	waiting := make(chan struct{})
	b.onWait = func() { close(waiting) }
	ctx := context.Background()
	res, err := store.Reserve(ctx, Reservation{ID: 1, Window: "lifetime", Amount: reservation(body, 10)}, limit)
	require.NoError(t, err)
	require.True(t, res.OK)

	done := sendAsync(t, api.client(t, b), api.srv.URL, body)
	<-waiting
	_, err = store.Settle(ctx, "lifetime", 1, 5000) // the other process's answer, unseen by b
	require.NoError(t, err)
	require.NoError(t, <-done)
	assert.Equal(t, Money(5000+3000), b.Spent())
}

func TestBudgetRefusesUnknownModelsWithoutSending(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("gpt-9", 10))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrUnknownModel)
	assert.Contains(t, err.Error(), `model "gpt-9"`)
	assert.Zero(t, api.hits.Load())
}

func TestBudgetPricesUnknownModelsWithTheFallbackEntry(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 10))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{FallbackModel: {Input: Dollar, Output: Dollar}}})
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("gpt-9", 10))
	require.NoError(t, err)
	assert.Equal(t, Money(20*1000), b.Spent())
}

func TestBudgetRefusesBodiesItCannotPrice(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, MaxBufferedBody: 100})
	client := api.client(t, b)
	for _, body := range []string{`not json`, `{"messages":[]}`, `{"model":"m","x":"` + strings.Repeat("a", 100) + `"}`} {
		_, err := send(t, client, api.srv.URL, body)
		assert.ErrorIs(t, err, ErrUnknownModel, body)
	}
	assert.Zero(t, api.hits.Load())
}

func TestBudgetPassesRequestsWithoutABody(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { io.WriteString(w, `{"data":[]}`) })
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	resp, err := api.client(t, b).Get(api.srv.URL + "/v1/models")
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, int64(1), api.hits.Load())
	assert.Zero(t, b.Spent())
}

func TestBudgetReleasesTheReservationOnErrorStatuses(t *testing.T) {
	for _, status := range []int{400, 429, 500, 503} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"message":"no","type":"server_error"}}`)
		})
		b := newTestBudget(t, BudgetConfig{Limit: Dollar})
		resp, err := post(api.client(t, b), api.srv.URL, chatBody("m", 10))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Zero(t, b.Spent(), status)
		assert.Equal(t, Dollar, b.Remaining(), status)
	}
}

func TestBudgetReleasesTheReservationWhenTheConnectionFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens: the dial fails before a byte is sent

	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	_, err = post(&http.Client{Transport: b.Wrap(base)}, "http://"+addr, chatBody("m", 10))
	require.Error(t, err)
	assert.Zero(t, b.Spent())
	assert.Equal(t, Dollar, b.Remaining())
}

// net/http refuses some requests before it asks for a connection, every
// time: a URL without host (a base URL's typo), an invalid method, a
// header that is not valid HTTP (an API key read with its newline). No
// provider saw them: their reservation is released, as for a dial that
// failed, not charged as a transport's that does not say what it did.
func TestBudgetReleasesWhatNetHTTPRefusesBeforeSending(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { io.WriteString(w, openAIJSON) })
	for name, spoil := range map[string]func(*http.Request){
		"no host":              func(r *http.Request) { r.URL.Host = "" },
		"invalid method":       func(r *http.Request) { r.Method = "PO ST" },
		"invalid header value": func(r *http.Request) { r.Header.Set("Authorization", "Bearer sk-read-from-a-file\n") },
	} {
		b := newTestBudget(t, BudgetConfig{Limit: Dollar})
		base := &http.Transport{}
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
		require.NoError(t, err)
		spoil(req)
		_, err = b.Wrap(base).RoundTrip(req)
		require.Error(t, err, name)
		assert.Zero(t, b.Spent(), name)
		assert.Equal(t, Dollar, b.Remaining(), name)
		base.CloseIdleConnections()
	}
	assert.Zero(t, api.hits.Load(), "nothing reached the provider")
}

func TestBudgetKeepsTheReservationWhenTheRequestFailsAfterBeingSent(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		close(arrived)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	client := api.client(t, b)

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }() // the provider has the request; we give up waiting
	req, err := http.NewRequestWithContext(ctx, "POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, reservation(body, 10), b.Spent(), "the provider may bill it: charge the reservation")
}

func TestBudgetChargesNothingWhenARetryFailsBeforeSendingAfterAnAnsweredAttempt(t *testing.T) {
	// The first attempt is answered 503 (not billed), then the server goes
	// down and the retry's dial is refused before a byte is sent. No
	// attempt can have been billed.
	newServer := func() *httptest.Server {
		var srv *httptest.Server
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			srv.Listener.Close() // the retry's dial is refused
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	for _, inside := range []bool{true, false} {
		srv := newServer()
		b := newTestBudget(t, BudgetConfig{Limit: Dollar})
		r, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
		require.NoError(t, err)
		base := &http.Transport{}
		t.Cleanup(base.CloseIdleConnections)
		layers := []Layer{r, b} // recommended: the Budget sees each attempt
		if !inside {
			layers = []Layer{b, r}
		}
		_, err = post(&http.Client{Transport: Chain(base, layers...)}, srv.URL, chatBody("m", 10))

		var re *RetryError
		require.ErrorAs(t, err, &re)
		require.Equal(t, 2, re.Attempts)
		if inside {
			assert.Zero(t, b.Spent())
			assert.Equal(t, Dollar, b.Remaining())
		} else {
			// Outside the Retrier the Budget cannot see the 503 that
			// answered the first write: it counts it as possibly billed.
			assert.Equal(t, reservation(chatBody("m", 10), 10), b.Spent())
		}
	}
}

func TestBudgetKeepsTheReservationWhenTheConnectionDropsAfterSending(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // the provider had the whole request, then the line dropped
		}
	})
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.Error(t, err)
	assert.Equal(t, reservation(body, 10), b.Spent())
	assert.Equal(t, int64(1), api.hits.Load())
}

func TestBudgetSettlesWhenTheCallerDecodesJSONAndCloses(t *testing.T) {
	// go-openai decodes with json.Decoder and closes without reading to EOF.
	api := newFakeAPI(t, answerUsage(12, 7))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	resp, err := post(api.client(t, b), api.srv.URL, chatBody("m", 100))
	require.NoError(t, err)
	var v struct{ Usage struct{ PromptTokens int } }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	resp.Body.Close()
	assert.Equal(t, Money(12*1000+7*2000), b.Spent())
}

func TestBudgetSettlesOnceWhenTheBodyIsClosedTwice(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	resp, err := post(api.client(t, b), api.srv.URL, chatBody("m", 10))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp.Body.Close()
	assert.Equal(t, Money(3000), b.Spent())
	assert.Equal(t, Dollar-3000, b.Remaining(), "nothing stays reserved, nothing is released twice")
}

func TestBudgetChargesTheReservationWhenTheBodyIsClosedUnread(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	body := chatBody("m", 10)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	resp, err := post(api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, reservation(body, 10), b.Spent())
}

func TestBudgetChargesTheReservationForLyingUsage(t *testing.T) {
	for _, usage := range []string{
		`{"prompt_tokens":-5,"completion_tokens":1}`,
		`{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}`,
		`{"prompt_tokens":5,"completion_tokens":100000000000}`,
		`{"prompt_tokens":"5","completion_tokens":1}`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			io.WriteString(w, `{"choices":[],"usage":`+usage+`}`)
		})
		body := chatBody("m", 10)
		b := newTestBudget(t, BudgetConfig{Limit: Dollar})
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.NoError(t, err)
		assert.Equal(t, reservation(body, 10), b.Spent(), usage)
	}
}

func TestBudgetReservesDefaultMaxOutputWhenTheRequestSetsNone(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	body := `{"model":"m","messages":[]}`
	b := newTestBudget(t, BudgetConfig{Limit: Money(len(body))*1000 + 99*2000, OutputReserve: 100})
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	assert.ErrorIs(t, err, ErrBudgetExceeded)

	b = newTestBudget(t, BudgetConfig{Limit: Money(len(body))*1000 + 100*2000, OutputReserve: 100})
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	assert.NoError(t, err)
}

func TestBudgetReservesOutputForEveryChoice(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	body := `{"model":"m","n":3,"max_tokens":10,"messages":[]}`
	b := newTestBudget(t, BudgetConfig{Limit: Money(len(body))*1000 + 29*2000})
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	assert.ErrorIs(t, err, ErrBudgetExceeded)
}

func TestBudgetReservesAHugeDefaultMaxOutputForEveryChoiceWithoutOverflow(t *testing.T) {
	// A DefaultMaxOutput no budget can hold makes requests that set no
	// max_tokens fail; n must not wrap the product around to a small
	// reservation.
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OutputReserve: math.MaxInt64})
	_, err := send(t, api.client(t, b), api.srv.URL, `{"model":"m","n":2,"messages":[]}`)
	assert.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Zero(t, api.hits.Load())
}

// streamOf renders OpenAI stream chunks for content, with a usage chunk
// when usage is set.
func streamOf(usage string, content ...string) string {
	var sb strings.Builder
	for _, c := range content {
		fmt.Fprintf(&sb, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}],\"usage\":null}\n\n", c)
	}
	if usage != "" {
		fmt.Fprintf(&sb, "data: {\"choices\":[],\"usage\":%s}\n\n", usage)
	}
	sb.WriteString("data: [DONE]\n\n")
	return sb.String()
}

func answerStream(stream string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, frame := range strings.SplitAfter(stream, "\n\n") {
			io.WriteString(w, frame)
			w.(http.Flusher).Flush()
		}
	}
}

func TestBudgetSettlesStreamsThatAskForUsage(t *testing.T) {
	stream := streamOf(`{"prompt_tokens":9,"completion_tokens":3}`, "a", "b", "c")
	api := newFakeAPI(t, answerStream(stream))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":10,"messages":[]}`
	got, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, stream, got, "the caller asked for usage: the stream is untouched")
	assert.Equal(t, body, api.lastBody())
	assert.Equal(t, Money(9*1000+3*2000), b.Spent())
}

func TestBudgetAddsIncludeUsageToStreamsAndHidesTheUsageChunk(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		cr, _ := parseChatRequest(body)
		usage := ""
		if cr.IncludeUsage {
			usage = `{"prompt_tokens":9,"completion_tokens":3}`
		}
		answerStream(streamOf(usage, "a", "b", "c"))(w, r, body)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	got, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)

	sent, err := parseChatRequest([]byte(api.lastBody()))
	require.NoError(t, err)
	assert.True(t, sent.IncludeUsage, "the server got stream_options.include_usage")
	assert.Equal(t, streamOf("", "a", "b", "c"), got, "the caller gets the stream it asked for")
	assert.Equal(t, Money(9*1000+3*2000), b.Spent())
}

func TestBudgetHidingTheUsageChunkKeepsAProxiedStreamWhole(t *testing.T) {
	// A relay that buffers streams sends them with a Content-Length. Once
	// the usage chunk is hidden, that length is wrong: a ReverseProxy
	// forwarding it would promise bytes it never sends.
	stream := streamOf(`{"prompt_tokens":3,"completion_tokens":2}`, "a", "b")
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(stream)))
		io.WriteString(w, stream)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	base := api.srv.Client().Transport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	target, err := url.Parse(api.srv.URL)
	require.NoError(t, err)
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: Chain(base, b),
	})
	defer proxy.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	got, err := send(t, client, proxy.URL, `{"model":"m","stream":true,"max_tokens":10}`)

	require.NoError(t, err)
	assert.Equal(t, streamOf("", "a", "b"), got)
	assert.Equal(t, Money(3*1000+2*2000), b.Spent())
}

func TestBudgetDoesNotChangeTheCallersRequest(t *testing.T) {
	api := newFakeAPI(t, answerStream(streamOf(`{"prompt_tokens":1,"completion_tokens":1}`)))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":10}`
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rc, err := req.GetBody()
	require.NoError(t, err)
	got, _ := io.ReadAll(rc)
	assert.Equal(t, body, string(got))
	assert.Equal(t, int64(len(body)), req.ContentLength)
}

func TestBudgetAddsIncludeUsageOnlyForCompletionsEndpoints(t *testing.T) {
	api := newFakeAPI(t, answerStream(streamOf("", "a")))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_output_tokens":10,"input":"hi"}`
	resp, err := api.client(t, b).Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, body, api.lastBody())
}

func TestMemoryStoreForgetsEndedWindows(t *testing.T) {
	s := NewMemoryBudgetStore()
	ctx := context.Background()
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i, w := range []string{"day:1", "day:2", "day:3"} {
		res, err := s.Reserve(ctx, Reservation{ID: uint64(i), Window: w, Start: day.AddDate(0, 0, i), Amount: 5}, 10)
		require.NoError(t, err)
		require.True(t, res.OK)
		_, err = s.Settle(ctx, w, uint64(i), 3)
		require.NoError(t, err)
	}
	assert.Len(t, s.windows, 1)
	settled, reserved, err := s.Totals(ctx, "day:3")
	require.NoError(t, err)
	assert.Equal(t, [2]Money{3, 0}, [2]Money{settled, reserved})
}

func TestBudgetChargesTheReservationForStreamsWithoutUsage(t *testing.T) {
	api := newFakeAPI(t, answerStream(streamOf("", "a")))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, DisableStreamUsage: true})
	body := `{"model":"m","stream":true,"max_tokens":10}`
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, body, api.lastBody(), "DisableStreamUsage leaves the body alone")
	assert.Equal(t, reservation(body, 10), b.Spent())
}

func TestBudgetChargesTheReservationForAStreamAnswerWithoutBody(t *testing.T) {
	// RoundTrippers in the wild (mocks, in-memory transports) return a nil
	// Body for an empty one; http.Client turns it into http.NoBody.
	base := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}}, nil
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":10}`
	resp, err := post(&http.Client{Transport: Chain(base, b)}, "http://api.test", body)
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	assert.NoError(t, err)
	assert.Empty(t, got)
	assert.NoError(t, resp.Body.Close())
	assert.Equal(t, reservation(body, 10), b.Spent())
}

func TestBudgetChargesTheReservationForStreamsCutShort(t *testing.T) {
	stream := streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a")
	api := newFakeAPI(t, answerStream(strings.TrimSuffix(stream, "data: [DONE]\n\n")))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":10}`
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, reservation(body, 10), b.Spent())
}

func TestBudgetSettlesAnthropicStreams(t *testing.T) {
	api := newFakeAPI(t, answerStream(anthropicStream))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	got := readThrough(t, api, b, "/v1/messages", body, "anthropic-version", "2023-06-01")
	assert.Equal(t, anthropicStream, got)
	assert.Equal(t, body, api.lastBody(), "Anthropic bodies take no stream_options")
	// 25 uncached + 10 cache reads in, 15 out.
	assert.Equal(t, Money(25*1000+10*100+15*2000), b.Spent())
}

func TestBudgetRollsOverFixedWindows(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 0))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Window: time.Hour})
	now := time.Date(2026, 11, 25, 10, 59, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	client := api.client(t, b)

	_, err := send(t, client, api.srv.URL, chatBody("m", 10))
	require.NoError(t, err)
	require.Equal(t, Money(10_000), b.Spent())
	now = now.Add(time.Minute)
	assert.Zero(t, b.Spent())
	assert.Equal(t, Dollar, b.Remaining())
}

func TestBudgetDailyWindowFollowsItsTimeZone(t *testing.T) {
	tokyo := time.FixedZone("UTC+9", 9*3600)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Period: Daily, Location: tokyo})
	before := time.Date(2026, 11, 25, 14, 59, 0, 0, time.UTC) // 23:59 in Tokyo
	after := before.Add(2 * time.Minute)                      // 00:01 the next day in Tokyo, same UTC day
	assert.Equal(t, "day:2026-11-25", b.currentSpan(before).key)
	assert.Equal(t, "day:2026-11-26", b.currentSpan(after).key)
}

func TestBudgetMonthlyWindowRollsOverOnTheFirst(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Period: Monthly})
	assert.Equal(t, "month:2026-11", b.currentSpan(time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)).key)
	assert.Equal(t, "month:2026-12", b.currentSpan(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)).key)
}

func TestBudgetSettlesIntoTheWindowOfTheReservation(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 0))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Window: time.Hour})
	now := time.Date(2026, 11, 25, 10, 59, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	resp, err := post(api.client(t, b), api.srv.URL, chatBody("m", 10))
	require.NoError(t, err)
	now = now.Add(time.Minute) // the answer is read in the next window
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Zero(t, b.Spent())
	assert.Equal(t, Dollar, b.Remaining())
	settled, reserved, err := b.store.Totals(context.Background(), b.spanAt(now.Add(-time.Minute)).key)
	require.NoError(t, err)
	assert.Equal(t, Money(10_000), settled)
	assert.Zero(t, reserved)
}

func TestBudgetAlertsOncePerThresholdPerWindow(t *testing.T) {
	api := newFakeAPI(t, answerUsage(100, 0)) // $0.0001 a request
	var mu sync.Mutex
	var alerts []BudgetAlert
	b := newTestBudget(t, BudgetConfig{
		Limit: 10 * 100_000, Window: time.Hour, Alerts: []float64{0.8, 0.5, 0.5},
		OnAlert: func(a BudgetAlert) { mu.Lock(); alerts = append(alerts, a); mu.Unlock() },
	})
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	client := api.client(t, b)
	body := `{"model":"m","max_tokens":1}`
	for range 9 {
		_, err := send(t, client, api.srv.URL, body)
		require.NoError(t, err)
	}
	require.Len(t, alerts, 2)
	assert.Equal(t, BudgetAlert{Threshold: 0.5, Spent: 500_000, Limit: 1_000_000, Window: "window:1h0m0s:2026-11-25T10:00:00Z"}, alerts[0])
	assert.Equal(t, 0.8, alerts[1].Threshold)
	assert.Equal(t, Money(800_000), alerts[1].Spent)

	now = now.Add(time.Hour)
	for range 5 {
		_, err := send(t, client, api.srv.URL, body)
		require.NoError(t, err)
	}
	require.Len(t, alerts, 3, "a new window alerts again")
	assert.Equal(t, "window:1h0m0s:2026-11-25T11:00:00Z", alerts[2].Window)
}

type failingStore struct{ err error }

func (s failingStore) Reserve(context.Context, Reservation, Money) (ReserveResult, error) {
	return ReserveResult{}, s.err
}
func (s failingStore) Settle(context.Context, string, uint64, Money) (Money, error) { return 0, s.err }
func (s failingStore) Renew(context.Context, string, []uint64, time.Duration) error { return s.err }
func (s failingStore) Totals(context.Context, string) (Money, Money, error)         { return 0, 0, s.err }

func TestBudgetFailsClosedWhenTheStoreFails(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	boom := errors.New("store down")
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Store: failingStore{boom}})
	_, err := send(t, api.client(t, b), api.srv.URL, chatBody("m", 10))
	assert.ErrorIs(t, err, boom)
	assert.Zero(t, api.hits.Load())
	assert.Zero(t, b.Remaining())
}

func TestNewBudgetRejectsInvalidConfig(t *testing.T) {
	tests := map[string]struct {
		c    BudgetConfig
		want string
	}{
		"no limit":          {BudgetConfig{Prices: testPrices}, "Limit must be in ($0, $1000000000.00], got $0.00"},
		"huge limit":        {BudgetConfig{Limit: MaxBudgetLimit + 1, Prices: testPrices}, "Limit must be"},
		"negative window":   {BudgetConfig{Limit: Dollar, Prices: testPrices, Window: -time.Second}, "Window must be >= 0"},
		"window and period": {BudgetConfig{Limit: Dollar, Prices: testPrices, Window: time.Hour, Period: Daily}, "set Window or Period, not both"},
		"bad period":        {BudgetConfig{Limit: Dollar, Prices: testPrices, Period: 7}, "Period must be"},
		"stray location":    {BudgetConfig{Limit: Dollar, Prices: testPrices, Location: time.UTC}, "Location applies to a Period"},
		"no prices":         {BudgetConfig{Limit: Dollar}, "Prices is empty"},
		"negative price":    {BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": {Input: -1}}}, `model "m": Input must be >= 0`},
		"negative output":   {BudgetConfig{Limit: Dollar, Prices: testPrices, OutputReserve: -1}, "OutputReserve must be >= 0"},
		"negative stored":   {BudgetConfig{Limit: Dollar, Prices: testPrices, StoredInputReserve: -1}, "StoredInputReserve must be >= 0"},
		"negative buffer":   {BudgetConfig{Limit: Dollar, Prices: testPrices, MaxBufferedBody: -1}, "MaxBufferedBody must be >= 0"},
		"negative lease":    {BudgetConfig{Limit: Dollar, Prices: testPrices, Lease: -time.Second}, "Lease must be 0 or at least 10ms"},
		"lease of 1ns":      {BudgetConfig{Limit: Dollar, Prices: testPrices, Lease: 1}, "Lease must be 0 or at least 10ms (leases are renewed every Lease/3), got 1ns"},
		"alerts no hook":    {BudgetConfig{Limit: Dollar, Prices: testPrices, Alerts: []float64{0.5}}, "Alerts need OnAlert"},
		"alert above one":   {BudgetConfig{Limit: Dollar, Prices: testPrices, Alerts: []float64{1.5}, OnAlert: func(BudgetAlert) {}}, "Alerts must be fractions"},
	}
	for name, tt := range tests {
		_, err := NewBudget(tt.c)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "httpguard: budget: ", name)
		assert.Contains(t, err.Error(), tt.want, name)
	}
}

func TestBudgetForwardsCloseIdleConnections(t *testing.T) {
	base := &idleCounter{} // from transport_test.go
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})

	(&http.Client{Transport: Chain(base, b)}).CloseIdleConnections()

	assert.Equal(t, 1, base.closed)
}

func TestBudgetCopiesItsPriceTable(t *testing.T) {
	prices := PriceTable{"m": {Input: Dollar, Output: Dollar}}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	delete(prices, "m")
	_, _, ok := b.cfg.Prices.lookup("m", tierStandard)
	assert.True(t, ok)
}

func TestUsageChunkStripperKeepsEverythingElse(t *testing.T) {
	stream := ": keep-alive\r\n\r\n" + strings.ReplaceAll(streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a", "b"), "\n", "\r\n")
	want := ": keep-alive\r\n\r\n" + strings.ReplaceAll(streamOf("", "a", "b"), "\n", "\r\n")
	for k := 1; k <= 7; k++ {
		sizes := make([]int, len(stream))
		for i := range sizes {
			sizes[i] = k
		}
		s := newUsageChunkStripper(io.NopCloser(&splitReader{data: []byte(stream), sizes: sizes}))
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		assert.Equal(t, want, string(got), "reads of %d bytes", k)
	}
	// A stream cut inside an event passes what it has.
	s := newUsageChunkStripper(io.NopCloser(strings.NewReader("data: {\"choices\":[{}]}\n\ndata: {\"cho")))
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, "data: {\"choices\":[{}]}\n\ndata: {\"cho", string(got))
}

// cannedTransport answers every request in memory, as a provider would.
type cannedTransport struct{ body string }

func (c cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(c.body)), Request: req,
	}, nil
}

// jsonHeader is shared by the benchmark's requests, which no layer modifies.
var jsonHeader = http.Header{"Content-Type": {"application/json"}}

func TestBudgetAccountsAttemptsWhoseCallerTracesThemToo(t *testing.T) {
	// The caller's own ClientTrace and the Budget's both hear the
	// attempt: a dial that fails is released, a request the provider had
	// before the line dropped is charged.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	})
	body := chatBody("m", 10)
	for _, c := range []struct {
		url     string
		written bool
	}{{refused, false}, {api.srv.URL, true}} {
		var conns, writes atomic.Int32
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GetConn:      func(string) { conns.Add(1) },
			WroteRequest: func(httptrace.WroteRequestInfo) { writes.Add(1) },
		})
		b := newTestBudget(t, BudgetConfig{Limit: Dollar})
		req, err := http.NewRequestWithContext(ctx, "POST", c.url+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		_, err = api.client(t, b).Do(req)
		require.Error(t, err)
		assert.Equal(t, int32(1), conns.Load(), "the caller's trace hears the attempt")
		if c.written {
			assert.Equal(t, int32(1), writes.Load())
			assert.Equal(t, reservation(body, 10), b.Spent(), "the provider may bill it: charge the reservation")
		} else {
			assert.Zero(t, b.Spent())
			assert.Equal(t, Dollar, b.Remaining())
		}
	}
}

func TestBudgetAttemptStaysInItsSizeClass(t *testing.T) {
	// An object over 512 bytes that holds pointers carries an 8-byte
	// header in its allocation: 696 bytes is the most the 704-byte class
	// takes. Each byte a request allocates costs time (in bench/, ~0.8 ns
	// a byte: the 768-byte class against this one, ~50 ns a request). The
	// attempt holds the request it sends (304 bytes), which would otherwise
	// be an allocation of its own, and a pointer to its price, not a copy;
	// the answer's scanner comes from a pool (jsonScanners), the trace is
	// made only for a transport that asks for it (net/http's), and where
	// include_usage goes in the body stays with the quote.
	require.LessOrEqual(t, unsafe.Sizeof(budgetAttempt{}), uintptr(704-8))
}

func BenchmarkBudgetRoundTrip(b *testing.B) {
	for _, bc := range []struct {
		name string
		rt   func(http.RoundTripper) http.RoundTripper
	}{
		{"bare", func(rt http.RoundTripper) http.RoundTripper { return rt }},
		{"budget", func(rt http.RoundTripper) http.RoundTripper {
			budget, err := NewBudget(BudgetConfig{Limit: MaxBudgetLimit, Prices: ExamplePrices()})
			if err != nil {
				b.Fatal(err)
			}
			return budget.Wrap(rt)
		}},
		{"stack", func(rt http.RoundTripper) http.RoundTripper { // Retrier → Budget → Limiter, all counting
			budget, err := NewBudget(BudgetConfig{Limit: MaxBudgetLimit, Prices: ExamplePrices()})
			if err != nil {
				b.Fatal(err)
			}
			retrier, err := NewRetrier(DefaultRetryPolicy())
			if err != nil {
				b.Fatal(err)
			}
			limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e12})
			if err != nil {
				b.Fatal(err)
			}
			return Chain(rt, retrier, budget, limiter)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := bc.rt(cannedTransport{openAIJSON})
			body := []byte(`{"model":"gpt-4.1","max_tokens":256,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one word."}]}`)
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", "http://api.example/v1/chat/completions", bytes.NewReader(body))
				req.Header = jsonHeader
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
			}
		})
	}
}

func TestBudgetSendsEachRequestItsOwnBodyUnderConcurrency(t *testing.T) {
	// Bodies with GetBody are read into pooled buffers to be priced; the
	// stream option is added to a copy. No request may see another's bytes.
	api := newFakeAPI(t, answerStream(streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a")))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	client := api.client(t, b)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := strings.Repeat(fmt.Sprint(i), 1+i*7)
			_, err := send(t, client, api.srv.URL, `{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"`+content+`"}]}`)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	want := map[string]bool{}
	for i := range 50 {
		want[`{"stream_options":{"include_usage":true},"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"`+strings.Repeat(fmt.Sprint(i), 1+i*7)+`"}]}`] = true
	}
	got := map[string]bool{}
	api.mu.Lock()
	for _, body := range api.bodies {
		got[body] = true
	}
	api.mu.Unlock()
	assert.Equal(t, want, got)
	assert.Equal(t, 50*Money(1000+2000), b.Spent())
}

func TestPeriodNamesItself(t *testing.T) {
	assert.Equal(t, "Daily", Daily.String())
	assert.Equal(t, "Period(7)", Period(7).String())
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: ExamplePrices(), Period: 7})
	assert.ErrorContains(t, err, "got Period(7)")
}

func TestBudgetChargesTheReservationForAnAnswerItCannotRead(t *testing.T) {
	// A caller that sets Accept-Encoding itself gets the answer compressed,
	// as net/http then leaves it. The Budget does not decompress: the usage
	// is unread, so the attempt is charged its reservation, the most the
	// provider may have billed, and the caller's bytes pass untouched.
	const answer = `{"usage":{"prompt_tokens":3,"completion_tokens":2}}`
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, answer)
		zw.Close()
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := chatBody("m", 100)
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	require.NoError(t, err)
	got, err := io.ReadAll(zr)
	require.NoError(t, err)

	assert.Equal(t, answer, string(got))
	assert.Equal(t, reservation(body, 100), b.Spent())
}

// anthropic-sdk-go reads a stream on to EOF and keeps the last
// message_delta's usage, even one after message_stop. Such late data is not
// read for usage: the attempt is charged its reservation, never the
// earlier, smaller usage.
func TestBudgetChargesTheReservationWhenDataFollowsAStreamsEnd(t *testing.T) {
	stream := "event: message_start\n" +
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," +
		"\"model\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":90}}\n\n"
	api := newFakeAPI(t, answerStream(stream))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	got := readThrough(t, api, b, "/v1/messages", body, "anthropic-version", "2023-06-01")
	require.Equal(t, stream, got, "the caller reads the late usage too")

	assert.Equal(t, reservation(body, 100), b.Spent(), "above the 10 input and 90 output tokens the late usage says")
}

func TestBudgetChargesAResponsesStreamItsUsage(t *testing.T) {
	api := newFakeAPI(t, answerStream(responsesStream))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	body := `{"model":"m","stream":true,"max_output_tokens":100,"input":"hi"}`
	got := readThrough(t, api, b, "/v1/responses", body)

	assert.Equal(t, responsesStream, got)
	assert.Equal(t, `{"model":"m","stream":true,"max_output_tokens":100,"input":"hi"}`, api.lastBody(), "no stream_options for the Responses API")
	assert.Equal(t, Money(24*1000+16*100+2*2000), b.Spent(), "the usage of response.completed, not the reservation")
}

func TestSettlementSaysWhichPriceTableEntryPricedTheAttempt(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	var got []Settlement
	var mu sync.Mutex
	table := PriceTable{"m": testPrices["m"], FallbackModel: testPrices["m"]}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: table, OnSettle: func(s Settlement) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}})
	for _, model := range []string{"m", "anything-else"} {
		_, err := send(t, api.client(t, b), api.srv.URL, chatBody(model, 10))
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	assert.Equal(t, [2]string{"m", "m"}, [2]string{got[0].Model, got[0].PricedAs})
	assert.Equal(t, [2]string{"anything-else", FallbackModel}, [2]string{got[1].Model, got[1].PricedAs})
	assert.Equal(t, Dollar, b.Limit())
}

// totalsDown is a store whose Totals fails, as a shared store's does in an
// outage.
type totalsDown struct{ *MemoryBudgetStore }

func (totalsDown) Totals(context.Context, string) (Money, Money, error) {
	return 0, 0, errors.New("unreachable")
}

func TestTotalsReportsTheStoresFailureWhereRemainingSaysZero(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Store: totalsDown{NewMemoryBudgetStore()}})
	_, _, err := b.Totals(context.Background())
	assert.ErrorContains(t, err, "httpguard: budget: store: unreachable")
	assert.Zero(t, b.Remaining())
	settled, held, err := newTestBudget(t, BudgetConfig{Limit: Dollar}).Totals(context.Background())
	assert.NoError(t, err)
	assert.Zero(t, settled+held)
}

func TestSettlementPricedAsNamesTheEntryOfTheDearerModelThatPricedTheRequest(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	var got []Settlement
	var mu sync.Mutex
	table := PriceTable{"dear": {Input: 10 * Dollar, Output: 20 * Dollar}, FallbackModel: testPrices["m"]}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: table, OnSettle: func(s Settlement) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}})
	// A model the caller makes up, priced at the dearer model that may
	// serve it: an OpenRouter fallback, an Azure deployment.
	for _, c := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"made-up-1","models":["dear"],"max_tokens":10,"messages":[]}`},
		{"/openai/deployments/dear/chat/completions", `{"model":"made-up-2","max_tokens":10,"messages":[]}`},
	} {
		readThrough(t, api, b, c.path, c.body)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	for _, s := range got {
		assert.Equal(t, "dear", s.PricedAs, "the entry that priced %q, not a name the caller chose", s.Model)
		assert.Equal(t, Money(10_000+20_000), s.Charged, "at dear's prices")
	}
}

// resendAfterBreak sends two calls with an Idempotency-Key through Retrier
// → Budget (Limit limit) to a server that bills every attempt it receives
// at its reservation res, and breaks the connection of the second attempt
// after reading it: net/http deems such a request replayable and sends it
// again from GetBody. It returns the attempts received, the money billed
// and charged, and the calls answered.
func resendAfterBreak(t *testing.T, limitIn int64) (hits int64, billed, charged, limit Money, answered int) {
	t.Helper()
	body := chatBody("m", 10)
	res := reservation(body, 10)
	var got, bill atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		bill.Add(int64(res))
		if got.Add(1) == 2 { // read, billed, then the kept-alive connection breaks
			c, _, err := w.(http.Hijacker).Hijack()
			require.NoError(t, err)
			c.Close()
			return
		}
		answerBound(w, r, b)
	})
	var charge atomic.Int64
	b := newTestBudget(t, BudgetConfig{Limit: Money(limitIn) * res, MaxWait: -1, OnSettle: func(s Settlement) { charge.Add(int64(s.Charged)) }})
	retrier, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	retrier.sleep = func(context.Context, time.Duration) error { return nil }
	c := &http.Client{Transport: Chain(api.srv.Client().Transport.(*http.Transport).Clone(), retrier, b)}
	for range 2 { // the first answer leaves its connection kept alive for the second
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", "call-1")
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answered++
		}
	}
	return got.Load(), Money(bill.Load()), Money(charge.Load()), Money(limitIn) * res, answered
}

// net/http's own resend of a written attempt had no reservation of its
// own: the provider billed 3 reservations under a Limit of 2. The Budget
// now lets a written attempt go out once; the Retrier's retry, reserved,
// does not fit and is refused.
func TestBudgetWrittenAttemptIsNotResentUnreserved(t *testing.T) {
	hits, billed, charged, limit, _ := resendAfterBreak(t, 2)
	t.Logf("attempts received %d, billed %v, charged %v, Limit %v", hits, billed, charged, limit)
	assert.LessOrEqual(t, billed, limit, "the provider's bill passed the Limit")
	assert.GreaterOrEqual(t, charged, billed)
}

// With room left, that attempt is sent again by the Retrier, under a
// reservation of its own, and answered; each write billed is charged.
func TestBudgetWrittenAttemptIsRetriedReserved(t *testing.T) {
	hits, billed, charged, _, answered := resendAfterBreak(t, 10)
	assert.Equal(t, int64(3), hits)
	assert.Equal(t, 2, answered)
	assert.Equal(t, billed, charged)
}

// An answer's body closed from another goroutine while it is read to its
// end settles once: its usage when the read reported first, else its
// reservation, never both or neither, and without a race (Close skips its
// lock once the attempt is settled).
func TestBudgetAnswerClosedWhileReadSettlesOnce(t *testing.T) {
	const rounds = 200
	body := chatBody("m", 10)
	api := newFakeAPI(t, answerUsage(3, 4))
	var settled atomic.Int32
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(Settlement) { settled.Add(1) }})
	client := api.client(t, b)
	var want Money
	used, reserved := Money(3)*1000+Money(4)*2000, reservation(body, 10)
	for range rounds {
		resp, err := post(client, api.srv.URL, body)
		require.NoError(t, err)
		before := settled.Load()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, resp.Body)
		}()
		resp.Body.Close()
		<-done
		resp.Body.Close()
		require.Equal(t, before+1, settled.Load(), "one settlement an answer")
		want += reserved
	}
	spent := b.Spent()
	assert.GreaterOrEqual(t, spent, Money(rounds)*used)
	assert.LessOrEqual(t, spent, want)
}
