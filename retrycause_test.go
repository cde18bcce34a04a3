package httpguard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// siblingErrors are what client.Do returned to a sibling in a fan-out, as
// errgroup's first error, which then ends the others' context as its
// cause: a refusal of the sibling's by the Budget, and a request net/http
// refused before sending (a URL's scheme here; an API key with its newline
// is another). Neither, inside the caller's cause, says anything of the
// caller's own attempt.
func siblingErrors(t *testing.T) map[string]error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "htps://api.test/v1/chat/completions", strings.NewReader(`{}`))
	require.NoError(t, err)
	_, unsent := (&http.Client{Transport: &http.Transport{}}).Do(req)
	require.True(t, unsendable(unsent), "%v", unsent)
	return map[string]error{
		"refused":    &url.Error{Op: "Post", URL: "http://api.test", Err: &RetryError{Err: Refuse(fmt.Errorf("httpguard: budget: %w", ErrBudgetExceeded))}},
		"unsendable": unsent,
	}
}

// net/http returns the cause as the error of an attempt in flight, and the
// Retrier, finding a refusal (or net/http's refusal) in it, took the
// attempt for one a layer below had refused unsent: it returned
// RetryError{Attempts: 0}, which IsRefusal reports as nothing sent, for a
// request the server had whole (and a provider may bill).
func TestACancellationCauseThatIsARefusalDoesNotUnsendAnAttempt(t *testing.T) {
	for name, sibling := range siblingErrors(t) {
		t.Run(name, func(t *testing.T) {
			arrived := make(chan struct{})
			release := make(chan struct{})
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(arrived)
				<-release
			}))
			defer api.Close()
			defer close(release)
			transport := &http.Transport{}
			defer transport.CloseIdleConnections()
			r, err := NewRetrier(DefaultRetryPolicy())
			require.NoError(t, err)
			client := &http.Client{Transport: Chain(transport, r)}

			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				<-arrived
				cancel(sibling)
			}()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL, strings.NewReader(`{}`))
			require.NoError(t, err)
			_, err = client.Do(req)
			require.ErrorIs(t, err, sibling, "the caller's own end")

			assert.False(t, IsRefusal(err), "the attempt reached the server: %v", err)
			var re *RetryError
			if assert.True(t, errors.As(err, &re), "%v", err) {
				assert.Equal(t, 1, re.Attempts, "the attempt sent counts")
			}
		})
	}
}

// The Budget assumes the worst of a transport that does not report what
// it did (no net/http trace): an attempt it failed is charged its
// reservation, unless a layer below refused it. A refusal (or net/http's)
// inside the caller's cause, which such a transport returns as net/http
// does, is not one: the attempt was released, and the provider may have
// billed it.
func TestABudgetChargesAnUntracedAttemptEndedByARefusalCause(t *testing.T) {
	for name, sibling := range siblingErrors(t) {
		t.Run(name, func(t *testing.T) {
			b, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
			require.NoError(t, err)
			sending := make(chan struct{})
			untraced := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				close(sending) // as a transport of its own, an HTTP/3 one say, would send it
				<-req.Context().Done()
				return nil, context.Cause(req.Context())
			})
			client := &http.Client{Transport: Chain(untraced, b)}

			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				<-sending
				cancel(sibling)
			}()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/v1/chat/completions",
				strings.NewReader(`{"model":"deepseek-v3.2","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`))
			require.NoError(t, err)
			_, err = client.Do(req)
			require.ErrorIs(t, err, sibling)

			assert.Positive(t, b.Spent(), "the attempt's reservation is charged: the provider may have billed it")
		})
	}
}

// IsUnsendable tells net/http's refusals to send a request, each of which
// it returns before it dials, from any other error: through a bare
// transport, and through a Retrier above it, which returns the refusal
// after one try as a refusal (nothing sent).
func TestIsUnsendableTellsNetHTTPRefusals(t *testing.T) {
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	r, err := NewRetrier(DefaultRetryPolicy())
	require.NoError(t, err)
	request := func(method, target string, header http.Header) *http.Request {
		req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Method, req.Header = method, header
		return req
	}
	key := http.Header{"Authorization": {"Bearer sk-test\n"}} // read from a file with its newline
	for name, req := range map[string]*http.Request{
		"no host":    request(http.MethodPost, "https:/api.test/v1", http.Header{}),
		"scheme":     request(http.MethodPost, "htps://api.test/v1", http.Header{}),
		"nil header": request(http.MethodPost, "http://api.test/v1", nil),
		"method":     request("PO ST", "http://api.test/v1", http.Header{}),
		"header":     request(http.MethodPost, "http://api.test/v1", key),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := transport.RoundTrip(req)
			require.Error(t, err)
			assert.True(t, IsUnsendable(err), "%v", err)

			_, err = Chain(transport, r).RoundTrip(req.Clone(context.Background()))
			require.Error(t, err)
			assert.True(t, IsUnsendable(err), "%v", err)
			assert.True(t, IsRefusal(err), "nothing sent: %v", err)
			assert.NotContains(t, err.Error(), "sk-test")
		})
	}

	for name, err := range map[string]error{
		"nil":           nil,
		"canceled":      context.Canceled,
		"server's text": fmt.Errorf(`malformed HTTP response "unsupported protocol scheme"`),
	} {
		assert.False(t, IsUnsendable(err), "%s", name)
	}
}
