package httpguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// onlyReader hides a body's type, so that http.NewRequest sets no GetBody.
type onlyReader struct{ io.Reader }

// net/http's HTTP/2 transport sends a request again on its own when the
// server resets its stream with PROTOCOL_ERROR, on a new connection each
// time, at once and without end: from GetBody for a request with a body
// (the Limiter sets one for a body it read), as is for one without. Below
// a Limiter used without a Retrier above, those sends took no turn: a
// Limiter of one request a second let 10,000 to 13,000 requests through in
// two seconds, GET or POST, until the caller's deadline (forever
// without one). The Limiter now sends each request down as a Retrier sends
// an attempt: net/http sends a body at most once and a request without a
// body at most twice, and the call fails instead.
func TestLimiterBoundsNetHTTPResendsOfAResetStream(t *testing.T) {
	for _, c := range []struct {
		name     string
		request  func(ctx context.Context, url string) (*http.Request, error)
		maxReads int64
	}{
		{"GET", func(ctx context.Context, url string) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/models", nil)
		}, 3},
		{"POST/GetBody", func(ctx context.Context, url string) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(writeOnceBody))
		}, 1},
		{"POST/own-GetBody", func(ctx context.Context, url string) (*http.Request, error) {
			br := strings.NewReader(writeOnceBody)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", br)
			if err == nil { // rewinds the very reader its Body reads, as openai-go's does
				req.GetBody = func() (io.ReadCloser, error) { br.Seek(0, io.SeekStart); return io.NopCloser(br), nil }
			}
			return req, err
		}, 1},
		{"POST/no-GetBody", func(ctx context.Context, url string) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", onlyReader{strings.NewReader(writeOnceBody)})
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newH2Resetter(t, 1, 1_000_000, "", func([]byte) Money { return 0 }, "{}")
			l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1})
			require.NoError(t, err)
			failsOnResend(t, l, s, c.request, c.maxReads)
			assert.Equal(t, uint64(1), l.Stats().Requests)
		})
	}
}

// failsOnResend sends the request newRequest makes through layer, over
// net/http's HTTP/2 transport, to s, which resets every stream, and
// asserts that the call failed on net/http's own resend (errSentBelow)
// before the caller's deadline, with at most maxReads requests sent to s.
func failsOnResend(t *testing.T, layer Layer, s *h2Resetter, newRequest func(ctx context.Context, url string) (*http.Request, error), maxReads int64) {
	t.Helper()
	tr := h2cTransport(t)
	closeDialedConns(t, tr)
	client := &http.Client{Transport: Chain(tr, layer)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := newRequest(ctx, s.URL())
	require.NoError(t, err)
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	t.Logf("err %v; the server got %d requests", err, s.reads.Load())
	require.Error(t, err)
	assert.NoError(t, ctx.Err(), "the call ended before the caller's deadline")
	assert.ErrorIs(t, err, errSentBelow)
	assert.LessOrEqual(t, s.reads.Load(), maxReads, "net/http sent the request again on its own")
}

// A Limiter placed above a Retrier (not the recommended order) sends the
// request to the Retrier, whose retries read it again from GetBody: the
// Limiter keeps only net/http's own resends from going out, so those
// retries still go.
func TestLimiterAboveARetrierLetsItRetryBodies(t *testing.T) {
	for _, c := range []struct {
		name string
		body func(*strings.Reader) io.Reader
	}{
		{"GetBody", func(r *strings.Reader) io.Reader { return r }},
		{"no-GetBody", func(r *strings.Reader) io.Reader { return onlyReader{r} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var reads atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if string(b) != writeOnceBody {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				if reads.Add(1) <= 2 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
			}))
			defer srv.Close()
			l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1000, Burst: 10})
			require.NoError(t, err)
			r, err := NewRetrier(fastRetries)
			require.NoError(t, err)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: Chain(tr, l, r)}
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", c.body(strings.NewReader(writeOnceBody)))
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, int64(3), reads.Load())
		})
	}
}

// sendBounded tells the GetBody funcs and the trace hook that already
// bound net/http's own sends by their code: a gate's (either kind), the
// Budget's sendOnce's, a Retrier's resendWatch. Were one of them not told
// (a refactor that makes a new closure), a request in the recommended
// stack would go behind a second gate or watch, which works but allocates
// on every request; anything else must not be taken for one.
func TestGatedGetBodyKnowsTheBoundingFuncsByTheirCode(t *testing.T) {
	body := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("{}")), nil }
	assert.False(t, gatedGetBody(body), "a caller's GetBody")

	plain := &http.Request{Body: io.NopCloser(strings.NewReader("{}")), GetBody: body}
	assert.True(t, gatedGetBody(gated(plain, plain.Body).GetBody), "a resendGate's get")
	fresh, err := http.NewRequest("POST", "http://api.example/", strings.NewReader("{}"))
	require.NoError(t, err)
	require.True(t, freshGetBody(fresh.GetBody))
	assert.True(t, gatedGetBody(gated(fresh, fresh.Body).GetBody), "a resendGate's getFresh")

	once := &http.Request{GetBody: body}
	(&budgetAttempt{}).sendOnce(once)
	assert.True(t, gatedGetBody(once.GetBody), "the Budget's sendOnce")

	w := &resendWatch{}
	assert.Equal(t, watchCode, reflect.ValueOf(w.gotConn).Pointer(), "a resendWatch's GotConn hook")
	assert.NotEqual(t, watchCode, reflect.ValueOf(func(httptrace.GotConnInfo) {}).Pointer())
}
