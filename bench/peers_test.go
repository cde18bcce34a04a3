package bench

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/require"
)

// Every peer gets the same settings: 3 retries (4 attempts at most) and
// waits of 1ms between attempts.
const (
	retries = 3
	wait    = time.Millisecond
)

// A peer is a retrying RoundTripper put over a base transport.
type peer struct {
	name string
	wrap func(tb testing.TB, base http.RoundTripper) http.RoundTripper
}

var peers = []peer{
	{"httpguard", guarded},
	{"retryablehttp", retryableHTTP},
	{"failsafehttp", failsafeHTTP},
}

// guarded is httpguard's Retrier with DefaultRetryPolicy, its waits made
// 1ms, and its default retry budget.
func guarded(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	p := httpguard.DefaultRetryPolicy()
	p.MaxRetries = retries
	p.BaseDelay, p.MaxDelay, p.Jitter = wait, wait, 0
	r, err := httpguard.NewRetrier(p)
	require.NoError(tb, err)
	return httpguard.Chain(base, r)
}

// retryableHTTP is go-retryablehttp's RoundTripper with its defaults, no
// logger (its default logger writes every retry to stderr).
func retryableHTTP(_ testing.TB, base http.RoundTripper) http.RoundTripper {
	c := retryablehttp.NewClient()
	c.Logger = nil
	c.RetryMax = retries
	c.RetryWaitMin, c.RetryWaitMax = wait, wait
	c.HTTPClient = &http.Client{Transport: base}
	return &retryablehttp.RoundTripper{Client: c}
}

// failsafeHTTP is failsafehttp's RoundTripper with its HTTP retry policy.
// ReturnLastFailure makes it return the last response, as the other two
// do, rather than an ExceededError without it. failsafehttp never closes
// the responses it retries, so their connections can't be reused and stay
// open (see TestConnectionsPerRequestOnOutage); drainRetried reads them to
// the end so that long runs don't pile up connections.
func failsafeHTTP(_ testing.TB, base http.RoundTripper) http.RoundTripper {
	return failsafeHTTPWith(base, drainRetried)
}

func failsafeHTTPWith(base http.RoundTripper, onRetry func(failsafe.ExecutionScheduledEvent[*http.Response])) http.RoundTripper {
	b := failsafehttp.NewRetryPolicyBuilder().
		WithMaxRetries(retries).
		WithDelay(wait).
		ReturnLastFailure()
	if onRetry != nil {
		b = b.OnRetryScheduled(onRetry)
	}
	return failsafehttp.NewRoundTripper(base, b.Build())
}

// drainRetried reads a retried response to its end, which hands its
// connection back to the pool. It must not Close the body: failsafehttp's
// body Close cancels the whole execution, retries included.
func drainRetried(e failsafe.ExecutionScheduledEvent[*http.Response]) {
	if r := e.LastResult(); r != nil && r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
}

// chatBody is a typical SDK request body.
var chatBody = []byte(`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hello"}],"max_tokens":64}`)

// newChatRequest returns a POST of chatBody to url, with GetBody set as
// http.NewRequest does for a *bytes.Reader.
func newChatRequest(tb testing.TB, url string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(chatBody))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", "application/json")
	return req
}
