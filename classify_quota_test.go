package httpguard

import (
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A quota 429 whose error code arrives with its headers, but whose body
// ends late (a chunked body held open), is a billing stop: the code came
// within the peek's 20 ms, and only the body's end did not. The peek read
// until the end or 16 KiB, so the code was never looked at, and the 429 was
// retried as a rate limit.
func TestQuota429WhoseBodyEndsLateIsNotRetried(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"code":"insufficient_quota","message":"You exceeded your current quota"}}`)
		w.(http.Flusher).Flush()
		<-release // the body ends when the caller has its answer
	})
	p := DefaultRetryPolicy()
	p.MaxRetries, p.BaseDelay, p.MaxDelay, p.Jitter = 2, 1, 1, 0
	r, _ := newTestRetrier(t, p)
	resp, err := clientFor(t, r).Get(s.URL)
	close(release)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(body), "insufficient_quota", "the body, whole")
	assert.EqualValues(t, 1, s.hits.Load(), "a billing stop is not retried")
}

// The peek stops at the read that completes the code, however the body's
// bytes come (one at a time, the code split across reads), and reads no
// further: the reader fails past the body.
func TestBillingStopPeekStopsAtTheCode(t *testing.T) {
	body := `{"error":{"code":"enforced_spend_limit_reached"}}`
	for _, step := range []int{1, 7, 30, len(body)} {
		rc := io.NopCloser(io.MultiReader(&chunkReader{b: []byte(body), size: step}, errReader{errors.New("read past the code")}))
		b := &peekedBody{rc: rc, done: make(chan struct{})}
		b.peek()
		require.NoError(t, b.err, "reads of %d bytes", step)
		assert.True(t, saysBillingStop(b.head), "reads of %d bytes", step)
	}
}
