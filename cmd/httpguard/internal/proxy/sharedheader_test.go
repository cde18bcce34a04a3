package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: writeError put the slices of an error's headers into the
// answer's as they were, and the answers that tell SDKs not to retry
// (X-Should-Retry: false: a budget's refusal, an unreachable or timed out
// upstream, its 101) all had the slice of the package's noRetry. The
// statusWriter masks the real keys in an answer's headers in place, so
// every such answer, in each of concurrent requests, wrote the same shared
// string: a data race (go test -race), and any change made in place to one
// answer's header was every later answer's.
func TestAnswersNotToRetryShareNoHeaderSlice(t *testing.T) {
	w := httptest.NewRecorder()
	writeError(w, OpenAI, apiError{status: http.StatusBadGateway, typ: "server_error", header: noRetry, msg: "x"})
	w.Header()["X-Should-Retry"][0] = "true"
	assert.Equal(t, "false", noRetry.Get("X-Should-Retry"), "an answer's header is its own")
	noRetry["X-Should-Retry"] = []string{"false"} // as it was, should it have changed

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String() + "/v1"
	ln.Close()
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, dead)}},
		Retry: RetrySpec{MaxRetries: 0, BaseDelay: 1, MaxDelay: 1}})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", nil)
				if !assert.NoError(t, err) {
					return
				}
				resp, err := r.client.Do(req)
				if !assert.NoError(t, err) {
					return
				}
				resp.Body.Close()
				assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
				assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
			}
		}()
	}
	wg.Wait()
}
