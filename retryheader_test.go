package httpguard

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A transport may still read an attempt's request after its RoundTrip
// returned: net/http's HTTP/2 writer goes on with a stream whose attempt
// timed out, and reads its header as it does (the race detector caught
// it reading the header of one attempt while a layer below the Retrier
// set a header on the next). A layer that sets a header on each attempt,
// as many authentication layers do, must not write the header an earlier
// attempt is read from, nor one that rewrites its URL: each retry goes
// down with a header and a URL of its own.
func TestRetrierGivesEachRetryAHeaderOfItsOwn(t *testing.T) {
	for _, withBudget := range []bool{false, true} {
		t.Run("budget="+strconv.FormatBool(withBudget), func(t *testing.T) {
			var sent []*http.Request // what the transport was given, as it would hold it
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				io.Copy(io.Discard, req.Body)
				req.Body.Close()
				sent = append(sent, req)
				status, answer := http.StatusServiceUnavailable, `{"error":{"message":"busy"}}`
				if len(sent) == 3 {
					status, answer = http.StatusOK, `{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`
				}
				return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(strings.NewReader(answer)), Request: req}, nil
			})
			attempts := 0
			stamp := LayerFunc(func(next http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(req *http.Request) (*http.Response, error) {
					attempts++
					req.Header.Set("X-Attempt", strconv.Itoa(attempts)) // as an authentication layer sets its token
					req.URL.RawQuery = "attempt=" + strconv.Itoa(attempts)
					return next.RoundTrip(req)
				})
			})
			r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
			require.NoError(t, err)
			layers := []Layer{r}
			if withBudget {
				layers = append(layers, newTestBudget(t, BudgetConfig{Limit: Dollar}))
			}
			client := &http.Client{Transport: Chain(base, append(layers, stamp)...)}

			req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			require.Len(t, sent, 3)
			// The first attempt shares the caller's request, as net/http
			// would send it; the retries leave it as that attempt left it.
			assert.Equal(t, "1", req.Header.Get("X-Attempt"), "the caller's header, after the retries")
			assert.Equal(t, "attempt=1", req.URL.RawQuery, "the caller's URL, after the retries")
			for i, req := range sent {
				assert.Equal(t, strconv.Itoa(i+1), req.Header.Get("X-Attempt"), "attempt %d's header, read after the retries", i+1)
				assert.Equal(t, "attempt="+strconv.Itoa(i+1), req.URL.RawQuery, "attempt %d's URL, read after the retries", i+1)
			}
		})
	}
}
