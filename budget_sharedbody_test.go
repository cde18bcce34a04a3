package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedReaderRequest returns a POST of body whose GetBody rewinds and
// returns the very reader its Body reads, as openai-go and anthropic-sdk-go
// build a request from a *bytes.Reader: reading a GetBody copy empties Body.
func sharedReaderRequest(t *testing.T, url, body string) *http.Request {
	t.Helper()
	r := bytes.NewReader([]byte(body))
	req, err := http.NewRequest(http.MethodPost, url, nil)
	require.NoError(t, err)
	req.ContentLength = int64(r.Len())
	req.GetBody = func() (io.ReadCloser, error) {
		_, err := r.Seek(0, io.SeekStart)
		return io.NopCloser(r), err
	}
	req.Body, _ = req.GetBody()
	return req
}

func TestBudgetSendsABodyWhoseGetBodySharesItsReader(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 5))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	const body = `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

	resp, err := api.client(t, b).Do(sharedReaderRequest(t, api.srv.URL+"/v1/chat/completions", body))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, body, api.lastBody())
}

func TestRewindingBodyAllowsCloseBeforeAndDuringRead(t *testing.T) {
	bodies := &countingBodies{body: `{"model":"m"}`}
	open := func() io.ReadCloser {
		r := &http.Request{GetBody: bodies.getBody}
		r.Body = io.NopCloser(bytes.NewReader(nil)) // emptied by a GetBody copy read before
		var rb rewindingBody
		rb.rewind(r)
		return r.Body
	}
	closeBeforeRead(t, open())
	assert.Zero(t, bodies.opened.Load(), "a closed body opened a copy")

	body := open()
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	assert.Equal(t, bodies.body, string(got), "an emptied Body reads a fresh copy")
	require.NoError(t, body.Close())

	closeDuringRead(open)
	assert.Equal(t, bodies.opened.Load(), bodies.closed.Load(), "every copy opened was closed")
}

// A layer that reads only part of a GetBody copy (the Limiter sniffing a
// body that is not JSON, such as openai-go's multipart upload of a file to
// transcribe; the Breaker stopping at MaxBufferedBody) leaves a shared
// reader in the middle, not at its end: the Body must still go whole.
func TestLimiterSendsWholeAPartlyReadBodyWhoseGetBodySharesItsReader(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 5))
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9})
	require.NoError(t, err)
	body := "--boundary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + strings.Repeat("a", 4000) + "\r\n--boundary--\r\n"

	resp, err := api.client(t, l).Do(sharedReaderRequest(t, api.srv.URL+"/v1/audio/transcriptions", body))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, body, api.lastBody())
}

func TestBreakerSendsWholeABodyLongerThanMaxBufferedBodyWhoseGetBodySharesItsReader(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 5))
	b, err := NewBreaker(BreakerConfig{MaxBufferedBody: 1024})
	require.NoError(t, err)
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 4000) + `"}]}`

	resp, err := api.client(t, b).Do(sharedReaderRequest(t, api.srv.URL+"/v1/chat/completions", body))

	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, body, api.lastBody())
}
