package httpguard

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// server is a loopback server that counts the requests it receives and
// answers the n-th one (from 1) with handle.
type server struct {
	*httptest.Server
	hits   atomic.Int64
	conns  atomic.Int64
	mu     sync.Mutex
	bodies []string
}

func newServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.hits.Add(1))
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		s.mu.Unlock()
		handle(w, r, n)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *server) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// failFirst answers the first n requests with status (and headers h), the
// rest with 200 "ok".
func failFirst(n, status int, h map[string]string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, i int) {
		if i <= n {
			for k, v := range h {
				w.Header().Set(k, v)
			}
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"message":"attempt %d"}}`, i)
			return
		}
		io.WriteString(w, "ok")
	}
}

// fastPolicy is DefaultRetryPolicy with its waits recorded, not slept.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func newTestRetrier(t *testing.T, p RetryPolicy) (*Retrier, *sleeps) {
	t.Helper()
	r, err := NewRetrier(p)
	require.NoError(t, err)
	s := &sleeps{}
	r.sleep = func(ctx context.Context, d time.Duration) error {
		s.mu.Lock()
		s.d = append(s.d, d)
		s.mu.Unlock()
		return ctx.Err()
	}
	return r, s
}

func clientFor(t *testing.T, layers ...Layer) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: Chain(tr, layers...)}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestChainPutsFirstLayerOutermost(t *testing.T) {
	var order []string
	mark := func(name string) Layer {
		return LayerFunc(func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				order = append(order, name)
				return next.RoundTrip(r)
			})
		})
	}
	base := roundTripFunc(func(*http.Request) (*http.Response, error) {
		order = append(order, "base")
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	rt := Chain(base, mark("outer"), nil, mark("inner"))
	resp, err := rt.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, []string{"outer", "inner", "base"}, order)
}

func TestChainSkipsLayersThatAreNilPointers(t *testing.T) {
	// Layers configured conditionally are often nil pointers, which a
	// Layer interface holding them does not make nil.
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, "ok") })
	var (
		budget   *Budget
		retrier  *Retrier
		limiter  *Limiter
		breaker  *Breaker
		fallback *Fallback
	)
	resp, err := clientFor(t, fallback, budget, retrier, breaker, limiter).Post(s.URL, "application/json", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "ok", string(b))
	assert.Equal(t, []string{`{"model":"m"}`}, s.received())
}

func TestChainNilBaseIsDefaultTransport(t *testing.T) {
	assert.Same(t, http.DefaultTransport, Chain(nil))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDefaultRetryPolicyIsTheHolySheepClient(t *testing.T) {
	p := DefaultRetryPolicy()
	assert.Equal(t, 5, p.MaxRetries)
	assert.Equal(t, time.Second, p.BaseDelay)
	assert.Equal(t, 60*time.Second, p.MaxDelay)
	assert.Equal(t, 500*time.Millisecond, p.Jitter)
	assert.Equal(t, RetryBudget{}, p.RetryBudget, "the default retry budget")
}

func TestNewRetrierRejectsInvalidPolicy(t *testing.T) {
	for name, c := range map[string]struct {
		p     RetryPolicy
		field string
	}{
		"negative retries":          {RetryPolicy{MaxRetries: -1}, "MaxRetries"},
		"negative base":             {RetryPolicy{BaseDelay: -time.Second}, "BaseDelay"},
		"negative jitter":           {RetryPolicy{Jitter: -1}, "Jitter"},
		"max below base":            {RetryPolicy{BaseDelay: 2 * time.Second, MaxDelay: time.Second}, "MaxDelay"},
		"negative server cap":       {RetryPolicy{MaxServerDelay: -1}, "MaxServerDelay"},
		"negative attempt":          {RetryPolicy{AttemptTimeout: -1}, "AttemptTimeout"},
		"unknown strategy":          {RetryPolicy{Strategy: 7}, "Strategy"},
		"negative buffer":           {RetryPolicy{MaxBufferedBody: -1}, "MaxBufferedBody"},
		"negative ratio":            {RetryPolicy{RetryBudget: RetryBudget{MaxRatio: -1}}, "RetryBudget.MaxRatio"},
		"ratio not a number":        {RetryPolicy{RetryBudget: RetryBudget{MinRatio: nanFloat()}}, "RetryBudget.MinRatio"},
		"infinite ratio":            {RetryPolicy{RetryBudget: RetryBudget{MaxRatio: math.Inf(1)}}, "RetryBudget.MaxRatio"},
		"floor above ceiling":       {RetryPolicy{RetryBudget: RetryBudget{MinRatio: 0.5, MaxRatio: 0.2}}, "RetryBudget.MinRatio"},
		"floor above default":       {RetryPolicy{RetryBudget: RetryBudget{MinRatio: 2}}, "RetryBudget.MinRatio"},
		"negative burst":            {RetryPolicy{RetryBudget: RetryBudget{Burst: -1}}, "RetryBudget.Burst"},
		"retries without waits":     {RetryPolicy{MaxRetries: 3}, "BaseDelay"},
		"only a MaxDelay":           {RetryPolicy{MaxRetries: 3, MaxDelay: time.Second}, "BaseDelay"},
		"jitter the strategy skips": {RetryPolicy{MaxRetries: 3, Jitter: time.Second, Strategy: FullJitter}, "BaseDelay"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := NewRetrier(c.p)
			assert.Nil(t, r)
			assert.ErrorContains(t, err, "httpguard: retry: "+c.field)
		})
	}
}

func TestNewRetrierAcceptsRetriesThatWait(t *testing.T) {
	for name, p := range map[string]RetryPolicy{
		"no retries":         {},
		"a base delay":       {MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
		"jitter alone":       {MaxRetries: 3, Jitter: time.Millisecond},
		"a Backoff":          {MaxRetries: 3, Backoff: retryablehttp.LinearJitterBackoff},
		"the default policy": DefaultRetryPolicy(),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewRetrier(p)
			assert.NoError(t, err)
		})
	}
}

func TestNewRetrierStoresThePolicyWithItsDefaults(t *testing.T) {
	r, err := NewRetrier(RetryPolicy{MaxRetries: 1, BaseDelay: time.Second, MaxDelay: time.Second})
	require.NoError(t, err)
	assert.NotNil(t, r.p.Classify)
	assert.Equal(t, defaultMaxServerDelay, r.p.MaxServerDelay)
	assert.EqualValues(t, DefaultMaxBufferedBody, r.p.MaxBufferedBody)
	assert.Equal(t, RetryBudget{MaxRatio: 1, MinRatio: 0.01, Burst: 10}, r.p.RetryBudget)
}

func nanFloat() float64 { z := 0.0; return z / z }

func TestRetriesTransientStatusesThenSucceeds(t *testing.T) {
	for _, status := range []int{408, 409, 429, 500, 502, 503, 504, 529} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			s := newServer(t, failFirst(2, status, nil))
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			resp, body := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "ok", body)
			assert.EqualValues(t, 3, s.hits.Load())
		})
	}
}

func TestDoesNotRetryOtherStatuses(t *testing.T) {
	for _, status := range []int{200, 201, 400, 401, 403, 404, 413, 422, 501, 505} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			s := newServer(t, failFirst(1, status, nil))
			r, sl := newTestRetrier(t, DefaultRetryPolicy())
			resp, _ := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, status, resp.StatusCode)
			assert.EqualValues(t, 1, s.hits.Load())
			assert.Empty(t, sl.all())
		})
	}
}

func TestBillingStop429IsNotRetriedAndBodyStaysReadable(t *testing.T) {
	for _, code := range []string{"insufficient_quota", "enforced_spend_limit_reached"} {
		t.Run(code, func(t *testing.T) {
			// Pad the body past the peek limit so the replay is exercised.
			body := `{"error":{"type":"` + code + `","code":"` + code + `","message":"` + strings.Repeat("x", maxPeek) + `"}}`
			s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(429)
				io.WriteString(w, body)
			})
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			resp, got := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, 429, resp.StatusCode)
			assert.Equal(t, body, got)
			assert.EqualValues(t, 1, s.hits.Load())
			assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
		})
	}
}

// A caller that sets Accept-Encoding itself reads the answers as the
// server compressed them: net/http does not decompress them. A quota 429
// compressed so is still a billing stop, not a rate limit to retry for
// half a minute; and its body reaches the caller as it came.
func TestACompressedBillingStopIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		body  string
		hits  int64
		sleep int
	}{
		{`{"error":{"type":"insufficient_quota","code":"insufficient_quota"}}`, 1, 0},
		{`{"error":{"type":"requests","code":"rate_limit_exceeded"}}`, 6, 5},
	} {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		io.WriteString(zw, tc.body)
		require.NoError(t, zw.Close())
		s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write(gz.Bytes())
		})
		r, sl := newTestRetrier(t, DefaultRetryPolicy())
		req, err := http.NewRequest("GET", s.URL, nil)
		require.NoError(t, err)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := clientFor(t, r).Do(req)
		require.NoError(t, err)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, gz.Bytes(), got, "the body as the server sent it")
		assert.Equal(t, tc.hits, s.hits.Load(), tc.body)
		assert.Len(t, sl.all(), tc.sleep, tc.body)
	}
}

func TestXShouldRetryHeaderOverridesStatus(t *testing.T) {
	t.Run("false on 503", func(t *testing.T) {
		s := newServer(t, failFirst(1, 503, map[string]string{"X-Should-Retry": "false"}))
		r, _ := newTestRetrier(t, DefaultRetryPolicy())
		resp, _ := get(t, clientFor(t, r), s.URL)
		assert.Equal(t, 503, resp.StatusCode)
		assert.EqualValues(t, 1, s.hits.Load())
	})
	t.Run("true on 200", func(t *testing.T) {
		// A 2xx answer was produced and billed: it is returned, and marked
		// so that the SDKs do not retry it either.
		s := newServer(t, failFirst(1, 200, map[string]string{"X-Should-Retry": "true"}))
		r, _ := newTestRetrier(t, DefaultRetryPolicy())
		resp, body := get(t, clientFor(t, r), s.URL)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, `{"error":{"message":"attempt 1"}}`, body)
		assert.Equal(t, []string{"false"}, resp.Header.Values("X-Should-Retry"))
		assert.EqualValues(t, 1, s.hits.Load())
	})
	t.Run("true on 400", func(t *testing.T) {
		s := newServer(t, failFirst(1, 400, map[string]string{"X-Should-Retry": "true"}))
		r, _ := newTestRetrier(t, DefaultRetryPolicy())
		resp, _ := get(t, clientFor(t, r), s.URL)
		assert.Equal(t, 200, resp.StatusCode)
		assert.EqualValues(t, 2, s.hits.Load())
	})
}

// anthropic-sdk-go reads a 2xx's body inside its attempt and retries when
// the read breaks off, unless the response says X-Should-Retry: false: a
// billed answer would be sent again. Every response the Retrier returns
// says so, a plain 200 and a 404 included.
func TestEveryResponseTheRetrierReturnsSaysNotToRetry(t *testing.T) {
	for _, status := range []int{200, 201, 404} {
		s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(status) })
		r, _ := newTestRetrier(t, DefaultRetryPolicy())
		resp, _ := get(t, clientFor(t, r), s.URL)
		assert.Equal(t, status, resp.StatusCode)
		assert.Equal(t, []string{"false"}, resp.Header.Values("X-Should-Retry"), "status %d", status)
	}
}

// resetConn ends the request's connection with a TCP reset.
func resetConn(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	require.NoError(t, err)
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

func TestRetriesConnectionReset(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			resetConn(t, w)
			return
		}
		io.WriteString(w, "ok")
	})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	// A POST, so that net/http's own retry of idempotent requests on a
	// reused connection is not what passes this test.
	resp, err := clientFor(t, r).Post(s.URL, "application/json", strings.NewReader(`{"a":1}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, s.hits.Load())
	assert.Equal(t, []string{`{"a":1}`, `{"a":1}`}, s.received())
}

func TestDoesNotRetryCertificateErrors(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	defer s.Close()
	var conns atomic.Int64
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	r.p.OnRetry = func(RetryEvent) { conns.Add(1) }
	_, err := clientFor(t, r).Get(s.URL) // the default transport does not trust the test CA
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.Empty(t, sl.all())
	assert.Zero(t, conns.Load())
}

func TestDoesNotRetryUnsupportedScheme(t *testing.T) {
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	_, err := clientFor(t, r).Get("ftp://127.0.0.1/")
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Zero(t, re.Attempts, "net/http sent nothing")
	assert.Empty(t, sl.all())
}

func TestGivingUpReturnsTheLastResponseWhole(t *testing.T) {
	s := newServer(t, failFirst(100, 503, map[string]string{"X-Request-Id": "r"}))
	p := DefaultRetryPolicy()
	p.MaxRetries = 2
	r, sl := newTestRetrier(t, p)
	resp, body := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, `{"error":{"message":"attempt 3"}}`, body)
	assert.Equal(t, "r", resp.Header.Get("X-Request-Id"))
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.EqualValues(t, 3, s.hits.Load())
	assert.Len(t, sl.all(), 2)
}

func TestGivingUpOnAServerSaidRetryTellsTheSDKNotToRetry(t *testing.T) {
	// Stainless SDKs retry any status whose x-should-retry is true: once
	// the Retrier has given up, they must not retry it again on top.
	s := newServer(t, failFirst(100, 400, map[string]string{"X-Should-Retry": "true"}))
	p := DefaultRetryPolicy()
	p.MaxRetries = 1
	r, _ := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 400, resp.StatusCode)
	assert.Equal(t, []string{"false"}, resp.Header.Values("X-Should-Retry"))
	assert.EqualValues(t, 2, s.hits.Load())
}

func TestTransportErrorSaysAttemptsAndUnwraps(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { resetConn(t, w) })
	p := DefaultRetryPolicy()
	p.MaxRetries = 2
	r, _ := newTestRetrier(t, p)
	_, err := clientFor(t, r).Post(s.URL, "text/plain", strings.NewReader("x"))
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Attempts)
	assert.Contains(t, err.Error(), "after 3 attempt(s)")
	assert.EqualValues(t, 3, s.hits.Load())
}

func TestBackoffWaitsGrowExponentiallyWithinJitter(t *testing.T) {
	s := newServer(t, failFirst(5, 503, nil))
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 200, resp.StatusCode)
	waits := sl.all()
	require.Len(t, waits, 5)
	for n, d := range waits {
		want := time.Second << n
		assert.InDelta(t, float64(want), float64(d), float64(500*time.Millisecond), "retry %d", n)
	}
}

func TestServerDirectedWaitsAreHonoured(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for name, h := range map[string]map[string]string{
		"Retry-After seconds":   {"Retry-After": "7"},
		"Retry-After date":      {"Retry-After": now.Add(7 * time.Second).Format(http.TimeFormat), "Date": now.Format(http.TimeFormat)}, // a server's clock is its Date's
		"retry-after-ms":        {"Retry-After-Ms": "7000"},
		"x-ratelimit-reset":     {"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "7s"},
		"x-ratelimit-tokens":    {"X-Ratelimit-Remaining-Tokens": "0", "X-Ratelimit-Reset-Tokens": "0m7s"},
		"anthropic reset":       {"Anthropic-Ratelimit-Requests-Remaining": "0", "Date": now.Format(http.TimeFormat), "Anthropic-Ratelimit-Requests-Reset": now.Add(7 * time.Second).Format(time.RFC3339)},
		"anthropic token reset": {"Anthropic-Ratelimit-Output-Tokens-Remaining": "0", "Date": now.Format(http.TimeFormat), "Anthropic-Ratelimit-Output-Tokens-Reset": now.Add(7 * time.Second).Format(time.RFC3339)},
	} {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, failFirst(1, 429, h))
			p := DefaultRetryPolicy()
			p.Jitter = 0
			r, sl := newTestRetrier(t, p)
			r.now = func() time.Time { return now }
			resp, _ := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, []time.Duration{7 * time.Second}, sl.all())
		})
	}
}

func TestRetrierPrefersAPreciseResetToACoarseRetryAfter(t *testing.T) {
	// Retry-After: 1 is the 20ms reset rounded up to a whole second.
	s := newServer(t, failFirst(1, 429, map[string]string{"Retry-After": "1", "X-Ratelimit-Reset-Requests": "20ms"}))
	p := RetryPolicy{MaxRetries: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, []time.Duration{20 * time.Millisecond}, sl.all())
}

func TestServerWaitLongerThanCapReturnsAtOnce(t *testing.T) {
	s := newServer(t, failFirst(1, 429, map[string]string{"Retry-After": "1743289200"}))
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.EqualValues(t, 1, s.hits.Load())
	assert.Empty(t, sl.all())
}

func TestAPluggedBackoffCannotWaitLongerThanTheCaps(t *testing.T) {
	// go-retryablehttp's DefaultBackoff reads Retry-After itself: a year
	// here, while the precise retry-after-ms the Retrier reads says 10ms.
	s := newServer(t, failFirst(1, 429, map[string]string{"Retry-After": "31536000", "Retry-After-Ms": "10"}))
	p := DefaultRetryPolicy()
	p.Backoff = retryablehttp.DefaultBackoff
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 429, resp.StatusCode, "the answer comes back at once")
	assert.EqualValues(t, 1, s.hits.Load())
	assert.Empty(t, sl.all())
}

func TestWaitThatCannotFinishBeforeDeadlineIsNotStarted(t *testing.T) {
	s := newServer(t, failFirst(1, 503, map[string]string{"Retry-After": "30"}))
	r, err := NewRetrier(DefaultRetryPolicy()) // real sleeps: a started wait would hang the test
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	start := time.Now()
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Less(t, time.Since(start), time.Second)
	assert.Equal(t, 503, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(b), "attempt 1")
}

func TestCancellationEndsTheWaitAtOnce(t *testing.T) {
	s := newServer(t, failFirst(1, 503, map[string]string{"Retry-After": "30"}))
	ctx, cancel := context.WithCancel(context.Background())
	p := DefaultRetryPolicy()
	p.OnRetry = func(RetryEvent) { cancel() }
	r, err := NewRetrier(p) // real sleeps: the 30 s wait must end on cancel
	require.NoError(t, err)
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	start := time.Now()
	_, err = clientFor(t, r).Do(req)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), time.Second)
	assert.EqualValues(t, 1, s.hits.Load())
}

// A wait can end as the caller's context does: a deadline that falls at
// the wait's end (both timers fire, and select picks either), a cancel
// just after. The retry is then not sent (net/http would send nothing for
// an ended context), so it is no attempt, and its turn of the retry
// budget goes back.
func TestARetryWhoseContextEndedWithTheWaitIsNotCounted(t *testing.T) {
	s := newServer(t, failFirst(5, http.StatusServiceUnavailable, nil))
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r.sleep = func(context.Context, time.Duration) error { cancel(); return nil } // the wait's timer won the tie
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	require.NoError(t, err)
	tokens := r.budget.tokens.Load()

	_, err = clientFor(t, r).Do(req)
	require.ErrorIs(t, err, context.Canceled)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.EqualValues(t, 1, s.hits.Load())
	assert.Equal(t, tokens, r.budget.tokens.Load(), "the retry not sent gave its turn back")
}

func TestCallerCancellationIsNotRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		cancel()
		<-r.Context().Done()
	})
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	_, err := clientFor(t, r).Do(req)
	assert.ErrorIs(t, err, context.Canceled)
	assert.EqualValues(t, 1, s.hits.Load())
	assert.Empty(t, sl.all())
}

func TestAttemptTimeoutRetriesASlowAttempt(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(arrived)
			<-r.Context().Done() // hangs until the attempt times out
			return
		}
		w.(http.Flusher).Flush()
		<-release // after the attempt's timeout: the body must still arrive
		io.WriteString(w, "ok")
	})
	// Each attempt's timeout fires by hand: the first once the server holds
	// it, the second once its headers are in. Real 50ms timeouts also ended,
	// on a loaded machine, attempts not yet at the server.
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Hour
	var reasons []error
	p.OnRetry = func(e RetryEvent) { reasons = append(reasons, e.Err) }
	r, _ := newTestRetrier(t, p)
	timeouts := make(chan func(), 2)
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == p.AttemptTimeout {
			timeouts <- f
		}
		return time.AfterFunc(d, f)
	}
	go func() {
		select {
		case first := <-timeouts:
			<-arrived
			first()
		case <-t.Context().Done():
		}
	}()
	defer close(release)

	resp, err := clientFor(t, r).Get(s.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	(<-timeouts)() // the second attempt's timeout, its headers in
	release <- struct{}{}
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "ok", string(body))
	assert.EqualValues(t, 2, s.hits.Load())
	require.Len(t, reasons, 1)
	assert.ErrorIs(t, reasons[0], ErrAttemptTimeout)
}

func TestAttemptTimeoutAcceptsAResponseWithoutBody(t *testing.T) {
	// RoundTrippers in the wild (mocks, in-memory transports) return a nil
	// Body for an empty one; http.Client turns it into http.NoBody.
	base := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}}, nil
	})
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Minute
	r, _ := newTestRetrier(t, p)
	resp, err := (&http.Client{Transport: Chain(base, r)}).Get("http://api.test/")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	assert.NoError(t, err)
	assert.Empty(t, b)
	assert.NoError(t, resp.Body.Close())
}

func TestAttemptTimeoutEveryTimeEndsInAttemptTimeoutError(t *testing.T) {
	arrived := make(chan struct{}, 2)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	p := DefaultRetryPolicy()
	p.MaxRetries = 1
	// Each attempt times out once the server holds it: a real 10ms timeout
	// also ended, on a loaded machine, attempts not yet at the server.
	p.AttemptTimeout = time.Hour
	var reasons []error
	p.OnRetry = func(e RetryEvent) { reasons = append(reasons, e.Err) }
	r, _ := newTestRetrier(t, p)
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		if d == p.AttemptTimeout {
			go func() {
				select {
				case <-arrived:
					f()
				case <-t.Context().Done():
				}
			}()
		}
		return time.AfterFunc(d, f)
	}
	_, err := clientFor(t, r).Get(s.URL)
	assert.ErrorIs(t, err, ErrAttemptTimeout)
	assert.NotErrorIs(t, err, context.Canceled)
	require.Len(t, reasons, 1)
	assert.ErrorIs(t, reasons[0], ErrAttemptTimeout)
	assert.EqualValues(t, 2, s.hits.Load(), "both attempts ended by their timeout")
}

func TestRetriesAConnectionClosedWithoutAnAnswer(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			require.NoError(t, err)
			conn.Close() // EOF, no response
			return
		}
		io.WriteString(w, "ok")
	})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	resp, err := clientFor(t, r).Post(s.URL, "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, s.hits.Load())
}

// bodyClosedFirst is a transport that returns what base returns only once
// base has closed the request's body. net/http often closes it before the
// answer comes back, but not always: a test of what the Retrier does with
// a body the transport is done with (see attemptRequest.held) must not
// depend on the race.
type bodyClosedFirst struct{ base http.RoundTripper }

func (c bodyClosedFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return c.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	closed := make(chan struct{})
	r.Body = &closeSignal{ReadCloser: req.Body, closed: closed}
	resp, err := c.base.RoundTrip(r)
	<-closed
	return resp, err
}

// closeSignal closes closed once its ReadCloser's Close has returned.
type closeSignal struct {
	io.ReadCloser
	closed chan struct{}
	once   sync.Once
}

func (c *closeSignal) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// clientClosingBodiesFirst is clientFor on bodyClosedFirst.
func clientClosingBodiesFirst(t *testing.T, layers ...Layer) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: Chain(bodyClosedFirst{tr}, layers...)}
}

func TestGetBodyFailureEndsTheRequestWithTheLastAnswerAtOnce(t *testing.T) {
	s := newServer(t, failFirst(1, 503, nil))
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	var events atomic.Int32
	r.p.OnRetry = func(RetryEvent) { events.Add(1) }
	req, _ := http.NewRequest("POST", s.URL, strings.NewReader("x"))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("boom") }
	resp, err := clientClosingBodiesFirst(t, r).Do(req)
	require.NoError(t, err, "the last attempt got an answer: it is returned, not a RetryError")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.JSONEq(t, `{"error":{"message":"attempt 1"}}`, string(body), "the answer whole")
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	assert.Empty(t, sl.all(), "no wait for a retry that cannot be sent")
	assert.Zero(t, events.Load(), "no retry announced")
	assert.EqualValues(t, 1, s.hits.Load())
}

func TestGetBodyFailureAfterATransportErrorReturnsThatError(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		conn, _, err := http.NewResponseController(w).Hijack()
		require.NoError(t, err)
		conn.Close() // EOF, no response
	})
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	req, _ := http.NewRequest("POST", s.URL, strings.NewReader("x"))
	boom := errors.New("boom")
	req.GetBody = func() (io.ReadCloser, error) { return nil, boom }
	_, err := clientClosingBodiesFirst(t, r).Do(req)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.ErrorIs(t, err, io.EOF, "the last attempt's transport error")
	assert.Empty(t, sl.all())
}

func TestGetBodyFailureOfAnSDKBodyEndsTheRequestWithTheLastAnswer(t *testing.T) {
	s := newServer(t, failFirst(1, 503, nil))
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	// openai-go's GetBody shape: not http.NewRequest's, so the Retrier
	// tracks the body; this one fails when asked for the retry's.
	body := []byte(`{"model":"gpt-4o-mini"}`)
	req, _ := http.NewRequest("POST", s.URL, nil)
	req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("boom") }
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.LessOrEqual(t, len(sl.all()), 1)
	assert.EqualValues(t, 1, s.hits.Load())
}

// onceReader is a request body without GetBody that can be read only once.
type onceReader struct {
	io.Reader
	closed atomic.Bool
}

func (r *onceReader) Close() error { r.closed.Store(true); return nil }

func TestEveryAttemptSendsTheWholeBody(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	for name, mk := range map[string]func() io.Reader{
		"with GetBody":    func() io.Reader { return strings.NewReader(body) },
		"without GetBody": func() io.Reader { return &onceReader{Reader: strings.NewReader(body)} },
	} {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, failFirst(2, 503, nil))
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			req, _ := http.NewRequest("POST", s.URL, mk())
			resp, err := clientFor(t, r).Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, []string{body, body, body}, s.received())
		})
	}
}

func TestBodyTooLargeToBufferIsSentOnceWhole(t *testing.T) {
	s := newServer(t, failFirst(100, 503, nil))
	p := DefaultRetryPolicy()
	p.MaxBufferedBody = 10
	r, _ := newTestRetrier(t, p)
	body := &onceReader{Reader: strings.NewReader(strings.Repeat("y", 100))}
	req, _ := http.NewRequest("POST", s.URL, body)
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, []string{strings.Repeat("y", 100)}, s.received())
	assert.True(t, body.closed.Load())
}

func TestUnlimitedMaxBufferedBodyStillReplaysTheBody(t *testing.T) {
	s := newServer(t, failFirst(1, 503, nil))
	p := DefaultRetryPolicy()
	p.MaxBufferedBody = math.MaxInt64 // "no limit"
	r, _ := newTestRetrier(t, p)
	req, _ := http.NewRequest("POST", s.URL, &onceReader{Reader: strings.NewReader("payload")})
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, []string{"payload", "payload"}, s.received())
}

func TestCallersRequestIsNotModifiedAndItsBodyIsClosed(t *testing.T) {
	s := newServer(t, failFirst(1, 503, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	body := &onceReader{Reader: strings.NewReader("payload")}
	req, _ := http.NewRequest("POST", s.URL, body)
	req.Header.Set("Authorization", "Bearer k")
	before := *req
	beforeHeader := req.Header.Clone()
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, beforeHeader, req.Header)
	assert.Same(t, before.Body, req.Body)
	assert.Nil(t, req.GetBody)
	assert.True(t, body.closed.Load())
}

func TestDiscardedResponsesAreDrainedSoTheConnectionIsReused(t *testing.T) {
	s := newServer(t, failFirst(3, 503, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 4, s.hits.Load())
	assert.EqualValues(t, 1, s.conns.Load())
}

func TestStreamIsPassedThroughAsItArrivesAndNeverRetriedOnceRead(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		<-release
		resetConn(t, w)
	})
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	resp, err := clientFor(t, r).Post(s.URL, "application/json", strings.NewReader(`{"stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	buf := make([]byte, 64)
	n, err := resp.Body.Read(buf) // arrives before the server finishes: nothing buffers it
	require.NoError(t, err)
	assert.Equal(t, "data: {\"n\":1}\n\n", string(buf[:n]))
	close(release)
	_, err = io.ReadAll(resp.Body)
	assert.Error(t, err, "a stream cut short reaches the caller as an error")
	assert.EqualValues(t, 1, s.hits.Load())
	assert.Empty(t, sl.all())
}

func TestGoRetryablehttpPoliciesPlugIn(t *testing.T) {
	s := newServer(t, failFirst(1, 409, nil)) // go-retryablehttp does not retry 409
	p := DefaultRetryPolicy()
	p.Classify = retryablehttp.DefaultRetryPolicy
	p.Backoff = retryablehttp.LinearJitterBackoff
	r, sl := newTestRetrier(t, p)
	resp, _ := get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 409, resp.StatusCode)
	assert.Empty(t, sl.all())

	s = newServer(t, failFirst(1, 500, nil))
	resp, _ = get(t, clientFor(t, r), s.URL)
	assert.Equal(t, 200, resp.StatusCode)
	waits := sl.all()
	require.Len(t, waits, 1)
	assert.GreaterOrEqual(t, waits[0], p.BaseDelay)
}

func TestOnRetryReportsEachRetry(t *testing.T) {
	s := newServer(t, failFirst(2, 503, nil))
	var events []RetryEvent
	p := DefaultRetryPolicy()
	p.OnRetry = func(e RetryEvent) { events = append(events, e) }
	r, _ := newTestRetrier(t, p)
	get(t, clientFor(t, r), s.URL)
	require.Len(t, events, 2)
	for i, e := range events {
		assert.Equal(t, i+1, e.Attempt)
		assert.Equal(t, 503, e.StatusCode)
		assert.ErrorIs(t, e.Reason, ErrRetryableStatus)
		assert.Positive(t, e.Delay)
	}
}

func TestLogsNeverCarrySecrets(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { resetConn(t, w) })
	var buf bytes.Buffer
	p := DefaultRetryPolicy()
	p.MaxRetries = 1
	p.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, _ := newTestRetrier(t, p)
	req, _ := http.NewRequest("POST", s.URL+"/v1/chat?key=sk-query", strings.NewReader("{}"))
	req.URL.User = nil
	for _, h := range []string{"Authorization", "Api-Key", "X-Api-Key", "Cookie"} {
		req.Header.Set(h, "sk-secret-"+h)
	}
	_, err := clientFor(t, r).Do(req)
	require.Error(t, err)
	out := buf.String()
	assert.Contains(t, out, "retrying")
	assert.Contains(t, out, "giving up")
	assert.NotContains(t, out, "sk-")
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.NotContains(t, re.Error(), "sk-")
}

func TestSilentWithoutALogger(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)
	s := newServer(t, failFirst(1, 503, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	get(t, clientFor(t, r), s.URL)
	assert.Empty(t, buf.String())
}

type idleCounter struct {
	memTransport
	closed int
}

func (c *idleCounter) CloseIdleConnections() { c.closed++ }

func TestCloseIdleConnectionsReachesTheBaseTransport(t *testing.T) {
	base := &idleCounter{}
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	(&http.Client{Transport: Chain(base, r)}).CloseIdleConnections()
	assert.Equal(t, 1, base.closed)
}

func TestRefusalsAreNotRetriedNorCountedAsAttempts(t *testing.T) {
	for _, e := range []error{ErrRateLimited, ErrBudgetExceeded, ErrUnknownModel, errors.New("a layer of the user's")} {
		calls := 0
		refuse := roundTripFunc(func(*http.Request) (*http.Response, error) {
			calls++
			return nil, Refuse(fmt.Errorf("httpguard: layer: %w", e))
		})
		r, sl := newTestRetrier(t, DefaultRetryPolicy())
		_, err := r.Wrap(refuse).RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
		assert.ErrorIs(t, err, e)
		assert.True(t, IsRefusal(err), "nothing was sent")
		var re *RetryError
		require.ErrorAs(t, err, &re)
		assert.Zero(t, re.Attempts)
		assert.Equal(t, "httpguard: retry: nothing sent: layer: "+e.Error(), err.Error())
		assert.Equal(t, 1, calls, "%v", e)
		assert.Empty(t, sl.all())
	}
}

// With the Budget inside the Retrier, each attempt asks it for room: a
// retry it refuses ends the request at once, and what was sent counts,
// also when a layer in between wrapped the refusal.
func TestRefusalOfARetryEndsTheRequestWithTheAttemptsSent(t *testing.T) {
	refusals := map[string]func() error{
		"as marked": func() error { return Refuse(fmt.Errorf("httpguard: budget: no room: %w", ErrBudgetExceeded)) },
		"wrapped by a layer in between": func() error {
			return fmt.Errorf("httpguard: budget: no room: %w", Refuse(ErrBudgetExceeded))
		},
	}
	for name, refusal := range refusals {
		t.Run(name, func(t *testing.T) {
			calls := 0
			next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				calls++
				if calls == 1 {
					return &http.Response{StatusCode: 503, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("busy")), Request: req}, nil
				}
				return nil, refusal()
			})
			r, sl := newTestRetrier(t, DefaultRetryPolicy())
			_, err := r.Wrap(next).RoundTrip(httptest.NewRequest("POST", "http://x/", strings.NewReader("{}")))

			var re *RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, 1, re.Attempts)
			assert.Equal(t, "httpguard: retry: after 1 attempt(s): budget: no room: "+ErrBudgetExceeded.Error(), err.Error())
			assert.ErrorIs(t, err, ErrBudgetExceeded)
			assert.False(t, IsRefusal(err), "the first attempt was sent")
			assert.False(t, IsRefusal(fmt.Errorf("wrapped: %w", err)), "whoever wraps it")
			assert.Equal(t, 2, calls)
			assert.Len(t, sl.all(), 1)
			assert.EqualValues(t, 10*unit, r.budget.tokens.Load(), "the refused retry gave its turn back")
		})
	}
}

// Every attempt reaches the layers below as a request of its own, with a
// body read from its start.
func TestEveryAttemptIsAFreshRequestWithAFreshBody(t *testing.T) {
	for name, body := range map[string]func() io.Reader{
		"no body":         func() io.Reader { return nil },
		"with GetBody":    func() io.Reader { return strings.NewReader("payload") },
		"without GetBody": func() io.Reader { return &onceReader{Reader: strings.NewReader("payload")} },
	} {
		t.Run(name, func(t *testing.T) {
			var seen []*http.Request
			var bodies []string
			next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				seen = append(seen, req)
				b := ""
				if req.Body != nil {
					raw, err := io.ReadAll(req.Body)
					require.NoError(t, err)
					req.Body.Close()
					b = string(raw)
				}
				bodies = append(bodies, b)
				status := 503
				if len(seen) == 3 {
					status = 200
				}
				return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
			})
			r, _ := newTestRetrier(t, DefaultRetryPolicy())
			req, err := http.NewRequest("POST", "http://x/", body())
			require.NoError(t, err)
			resp, err := r.Wrap(next).RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()

			require.Len(t, seen, 3)
			assert.NotSame(t, seen[0], seen[1])
			assert.NotSame(t, seen[1], seen[2])
			assert.NotSame(t, seen[0], seen[2])
			want := "payload"
			if name == "no body" {
				want = ""
			}
			assert.Equal(t, []string{want, want, want}, bodies)
		})
	}
}

func TestARequestWithoutURLIsAnErrorNotAPanic(t *testing.T) {
	calls := 0
	next := roundTripFunc(func(*http.Request) (*http.Response, error) { calls++; return nil, nil })
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	body := &onceReader{Reader: strings.NewReader("x")}
	_, err := r.Wrap(next).RoundTrip(&http.Request{Method: "POST", Header: http.Header{}, Body: body})
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Zero(t, re.Attempts)
	assert.EqualError(t, err, "httpguard: retry: nothing sent: request has no URL")
	assert.Zero(t, calls)
	assert.True(t, body.closed.Load(), "the body is closed, as on every error")
}

func TestATransportThatReturnsNothingIsAnErrorNotAPanic(t *testing.T) {
	calls := 0
	next := roundTripFunc(func(*http.Request) (*http.Response, error) { calls++; return nil, nil })
	p := DefaultRetryPolicy()
	p.AttemptTimeout = time.Minute
	r, sl := newTestRetrier(t, p)
	_, err := r.Wrap(next).RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.ErrorContains(t, err, "httpguard.roundTripFunc returned neither a response nor an error")
	assert.Equal(t, 1, calls, "a broken transport is not retried")
	assert.Empty(t, sl.all())
}

// countedClose is a response body that counts its Closes.
type countedClose struct {
	io.Reader
	closes *atomic.Int32
}

func (c *countedClose) Close() error { c.closes.Add(1); return nil }

// A RoundTripper must return a response or an error, never both. The
// Retrier ignores the response of one that returns both, as http.Client
// does: it neither follows its Retry-After nor hands it on. But it closes
// it, since no one else will, whatever becomes of the error.
func TestAResponseThatCameWithAnErrorIsClosedAndIgnored(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		attempts int
	}{
		{"retried", io.ErrUnexpectedEOF, 3},
		{"not retried", &tls.CertificateVerificationError{Err: errors.New("bad certificate")}, 1},
		{"a refusal", Refuse(ErrRateLimited), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var made, closes atomic.Int32
			next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				made.Add(1)
				return &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {"30"}},
					Body: &countedClose{strings.NewReader("gone"), &closes}, Request: req}, tc.err
			})
			p := DefaultRetryPolicy()
			p.MaxRetries = 2
			r, sl := newTestRetrier(t, p)
			resp, err := r.Wrap(next).RoundTrip(httptest.NewRequest("GET", "http://api.test/", nil))
			assert.Nil(t, resp)
			var re *RetryError
			require.ErrorAs(t, err, &re)
			assert.ErrorIs(t, err, tc.err)
			assert.Equal(t, tc.attempts, re.Attempts)
			assert.Equal(t, made.Load(), closes.Load(), "every response that came with an error is closed")
			for _, d := range sl.all() {
				assert.Less(t, d, 30*time.Second, "the ignored response's Retry-After is not followed")
			}
		})
	}
}

func TestABodyNotAsLongAsDeclaredIsNeverSent(t *testing.T) {
	s := newServer(t, failFirst(0, 200, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	for _, cl := range []int64{3, 40} {
		for _, getBody := range []bool{false, true} {
			req, err := http.NewRequest("POST", s.URL, strings.NewReader("hello world"))
			require.NoError(t, err)
			req.ContentLength = cl
			if !getBody {
				req.GetBody = nil
			}
			_, err = clientFor(t, r).Do(req)
			assert.ErrorContains(t, err, fmt.Sprintf("http: ContentLength=%d with Body length 11", cl))
			var re *RetryError
			require.ErrorAs(t, err, &re)
			assert.LessOrEqual(t, re.Attempts, 1, "not retried")
		}
	}
	assert.Zero(t, s.hits.Load())
}

func TestABodyThatFailsToReadIsAnErrorBeforeAnyAttempt(t *testing.T) {
	s := newServer(t, failFirst(0, 200, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	boom := errors.New("boom")
	req, err := http.NewRequest("POST", s.URL, io.MultiReader(strings.NewReader("x"), iotestErrReader{boom}))
	require.NoError(t, err)
	_, err = clientFor(t, r).Do(req)
	assert.ErrorIs(t, err, boom)
	assert.ErrorContains(t, err, "httpguard: retry: nothing sent: boom")
	assert.Zero(t, s.hits.Load())
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

// doBounded sends a request through c with a deadline of 10s: a Retrier
// that waited for a stalled body would return only then, with an error or
// the body's end lost to the deadline.
func doBounded(t *testing.T, c *http.Client, method, url string, body io.Reader) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	return resp
}

func TestDiscardingAStalledErrorBodyDoesNotHoldTheRetry(t *testing.T) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	stalled := httpguardtest.ServiceUnavailable()
	stalled.StallBody = time.Hour
	require.NoError(t, srv.Enqueue(stalled))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	resp := doBounded(t, clientFor(t, r), "POST", srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
	defer resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, srv.Stats().Requests)
}

func TestDiscardIsBoundedInTime(t *testing.T) {
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	var bound time.Duration
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		bound = d
		return time.AfterFunc(0, f) // the bound passes at once
	}
	body := newStalledBody()
	r.discard(&http.Response{Body: body})
	assert.Equal(t, maxDrainTime, bound)
	assert.True(t, body.closed())
}

// stalledBody is a response body whose Read blocks until it is closed, as
// net/http's do.
type stalledBody struct {
	done chan struct{}
	once sync.Once
}

func newStalledBody() *stalledBody { return &stalledBody{done: make(chan struct{})} }

func (b *stalledBody) Read([]byte) (int, error) { <-b.done; return 0, net.ErrClosed }
func (b *stalledBody) Close() error             { b.once.Do(func() { close(b.done) }); return nil }
func (b *stalledBody) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// stallAfter answers 429 with headers and the first bytes of body, then
// waits for release before the rest.
func stallAfter(head, rest string, release <-chan struct{}) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if n > 1 {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(head)+len(rest)))
		w.WriteHeader(429)
		io.WriteString(w, head)
		w.(http.Flusher).Flush()
		select {
		case <-release:
			io.WriteString(w, rest)
		case <-r.Context().Done():
		}
	}
}

func TestA429WhoseBodyStallsIsRetriedPromptly(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := newServer(t, stallAfter(`{"error":{"code":`, `"rate_limit_exceeded"}}`, release))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	resp := doBounded(t, clientFor(t, r), "GET", s.URL, nil)
	defer resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, s.hits.Load())
}

func TestA429WhoseBodyStallsComesBackPromptlyWithItsBodyWhole(t *testing.T) {
	release := make(chan struct{})
	head, rest := `{"error":{"code":"insuff`, `icient_quota","message":"pay"}}`
	s := newServer(t, stallAfter(head, rest, release))
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	r, _ := newTestRetrier(t, p)
	resp := doBounded(t, clientFor(t, r), "GET", s.URL, nil)
	defer resp.Body.Close()
	assert.Equal(t, 429, resp.StatusCode)

	close(release) // the rest of the body comes only now
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, head+rest, string(b))
}

func TestA429BodyCutShortReachesTheCallerWithItsError(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		require.NoError(t, err)
		conn.Close()
	})
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	r, _ := newTestRetrier(t, p)
	resp, err := clientFor(t, r).Get(s.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	assert.Equal(t, `{"error":`, string(b))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestPluggedClassifierNeverRetriesOwnRefusalsAndSeesURLErrors(t *testing.T) {
	var seen []error
	p := DefaultRetryPolicy()
	p.Classify = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		seen = append(seen, err)
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	r, sl := newTestRetrier(t, p)

	calls := 0
	refuse := roundTripFunc(func(*http.Request) (*http.Response, error) {
		calls++
		return nil, Refuse(fmt.Errorf("httpguard: limiter: %w", ErrRateLimited))
	})
	_, err := r.Wrap(refuse).RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	assert.ErrorIs(t, err, ErrRateLimited)
	assert.Equal(t, 1, calls)
	assert.Empty(t, seen, "the refusal never reaches the classifier")

	// An untrusted certificate: go-retryablehttp refuses to retry it only
	// when it sees the *url.Error http.Client would add.
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	defer s.Close()
	_, err = clientFor(t, r).Get(s.URL + "/?key=sk-secret")
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.Empty(t, sl.all())
	require.Len(t, seen, 1)
	var ue *url.Error
	require.ErrorAs(t, seen[0], &ue)
	assert.NotContains(t, ue.Error(), "sk-secret")
}

func TestAttemptTimeoutLooksLikeATimeout(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &RetryError{Attempts: 2, Err: fmt.Errorf("%w (10ms)", ErrAttemptTimeout)})
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.ErrorIs(t, err, ErrAttemptTimeout)
}

func TestAttemptTimeoutLooksLikeATimeoutThroughHTTPClient(t *testing.T) {
	// http.Client wraps the error in a *url.Error, whose Timeout asks only
	// the error it wraps directly: the *RetryError.
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() })
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	p.AttemptTimeout = 10 * time.Millisecond
	r, _ := newTestRetrier(t, p)
	_, err := clientFor(t, r).Get(s.URL)
	require.ErrorIs(t, err, ErrAttemptTimeout)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
}

func TestAttemptTimeoutFiringAsTheResponseArrivesDoesNotCutItsBody(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		io.WriteString(w, "head ")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "tail")
	})
	defer close(release)

	// The timer expires while the response is on its way: its callback has
	// started, but not yet run, when the Retrier stops it.
	started, gate, fired := make(chan struct{}), make(chan struct{}), make(chan struct{})
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	p.AttemptTimeout = time.Millisecond
	r, _ := newTestRetrier(t, p)
	r.afterFunc = func(d time.Duration, f func()) *time.Timer {
		return time.AfterFunc(d, func() {
			close(started)
			<-gate
			f()
			close(fired)
		})
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := tr.RoundTrip(req)
		<-started
		return resp, err
	})

	resp, err := (&http.Client{Transport: Chain(base, r)}).Get(s.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	close(gate)
	<-fired
	release <- struct{}{}
	b, err := io.ReadAll(resp.Body)
	assert.NoError(t, err, "a response the Retrier handed over is not cancelled afterwards")
	assert.Equal(t, "head tail", string(b))
}

// net/http refuses a body not as long as declared, but when its read loop
// sees the connection it closed first it says "use of closed network
// connection", which is worth retrying: the Retrier checks the length of a
// GetBody body whose attempt failed, and refuses it as net/http meant to.
func TestABodyNotAsLongAsDeclaredIsNotRetriedWhateverNetHTTPSays(t *testing.T) {
	for _, tc := range []struct {
		contentLength int64
		want          string
		refused       bool
	}{
		// Shorter than declared: no server had it whole.
		{40, "httpguard: retry: nothing sent: http: ContentLength=40 with Body length 11", true},
		// Longer: net/http wrote the declared bytes before it found more.
		{3, "httpguard: retry: after 1 attempt(s): http: ContentLength=3 with Body length 11", false},
	} {
		calls := 0
		closed := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			calls++
			req.Body.Close()
			return nil, errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection")
		})
		r, sl := newTestRetrier(t, DefaultRetryPolicy())
		req, err := http.NewRequest("POST", "http://api.test/", strings.NewReader("hello world"))
		require.NoError(t, err)
		req.ContentLength = tc.contentLength

		_, err = r.Wrap(closed).RoundTrip(req)
		assert.EqualError(t, err, tc.want)
		assert.Equal(t, tc.refused, IsRefusal(err))
		assert.Equal(t, 1, calls, "not retried")
		assert.Empty(t, sl.all())
	}
}

// net/http's HTTP/1 writes a body's declared bytes before it reads on and
// finds it longer than declared: past its 4 KB write buffer they are on
// the wire, and the server has a whole request, which it runs (here, cut
// to a JSON body that parses). The Retrier must not call that attempt
// unsent (a refusal, Attempts 0), which tells whoever reads the error that
// sending the request again sends it once.
func TestABodyLongerThanDeclaredIsNotCalledUnsent(t *testing.T) {
	returned := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		<-returned // answers once net/http has reported the extra byte
	})
	r, sl := newTestRetrier(t, DefaultRetryPolicy())
	declared := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 8<<10) + `"}]}`
	req, err := http.NewRequest("POST", s.URL, strings.NewReader(declared+"\n"))
	require.NoError(t, err)
	req.ContentLength = int64(len(declared))

	_, err = clientFor(t, r).Do(req)
	close(returned)
	require.Eventually(t, func() bool { return len(s.received()) == 1 }, 5*time.Second, time.Millisecond,
		"the server ran the request")
	assert.True(t, s.received()[0] == declared, "the server had the declared bytes whole")
	assert.ErrorContains(t, err, fmt.Sprintf("http: ContentLength=%d with Body length %d", len(declared), len(declared)+1))
	assert.False(t, IsRefusal(err), "an attempt the server ran is no refusal")
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.Empty(t, sl.all(), "not retried")
}

// A Retry-After date is on the server's clock: the wait is counted from
// the Date the server sent, so a clock here that is off from the server's
// neither cuts the wait short (ours ahead) nor stretches it (ours behind).
// Counted from this clock, a server 30 s behind asked for 10 s and got the
// backoff alone.
func TestRetryAfterDateCountsFromTheServersDate(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{-30 * time.Second, 30 * time.Second, 0} {
		t.Run(skew.String(), func(t *testing.T) {
			server := now.Add(skew)
			s := newServer(t, failFirst(1, http.StatusServiceUnavailable, map[string]string{
				"Date": server.Format(http.TimeFormat), "Retry-After": server.Add(10 * time.Second).Format(http.TimeFormat)}))
			p := DefaultRetryPolicy()
			p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, time.Millisecond, 0
			r, sl := newTestRetrier(t, p)
			r.now = func() time.Time { return now }
			resp, _ := get(t, clientFor(t, r), s.URL)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, []time.Duration{10 * time.Second}, sl.all())
		})
	}
	// Without a Date, or with one that does not parse, this clock counts.
	for _, h := range []http.Header{{}, {"Date": {"yesterday"}}} {
		h.Set("Retry-After", now.Add(10*time.Second).Format(http.TimeFormat))
		d, _, ok := retryAfterHeader(h, now)
		assert.True(t, ok)
		assert.Equal(t, 10*time.Second, d, "%v", h)
	}
}
