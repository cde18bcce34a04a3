package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countedBody hands out copies of a body through GetBody, counting the
// copies and the bytes read from them.
type countedBody struct {
	body  string
	calls atomic.Int32
	read  atomic.Int64
}

func (c *countedBody) getBody() (io.ReadCloser, error) {
	c.calls.Add(1)
	return io.NopCloser(&copyReader{r: strings.NewReader(c.body), n: &c.read}), nil
}

// copyReader is a copy of a countedBody, counting the bytes read in n.
type copyReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r *copyReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// A body longer than MaxBufferedBody that moves to a target without Models
// was read three times for it: into a buffer of MaxBufferedBody bytes that
// was then dropped, to its end for credentials, and to send it. It is read
// once for credentials and once to send it, whether its length is declared
// or not.
func TestFallbackReadsALongBodyOnceBeforeSendingItToTheNextTarget(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 100<<10) + `"}]}`
	for _, declared := range []bool{true, false} {
		primary := newStatusServer(t, http.StatusServiceUnavailable)
		second := newBodyRecorder(t)
		f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
			{Name: "primary", BaseURL: primary.URL},
			{Name: "second", BaseURL: second.URL},
		}})
		require.NoError(t, err)
		c := &http.Client{Transport: f.Wrap(nil)}
		t.Cleanup(c.CloseIdleConnections)
		counted := &countedBody{body: body}
		req, err := http.NewRequest(http.MethodPost, primary.URL+"/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.GetBody = counted.getBody
		if !declared {
			req.ContentLength = 0 // unknown: sent chunked
		}

		resp, err := c.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		assert.Equal(t, "second", resp.Header.Get(TargetHeader))
		assert.Equal(t, []string{body}, second.received())
		assert.Equal(t, int32(2), counted.calls.Load(), "GetBody calls, length declared: %v", declared)
		assert.Equal(t, int64(2*len(body)), counted.read.Load(), "bytes read, length declared: %v", declared)
	}
}

// A body whose declared length is over MaxBufferedBody goes to no target
// with Models unread: it cannot be mapped.
func TestFallbackDoesNotReadABodyDeclaredTooLongToMap(t *testing.T) {
	body := `{"model":"small","messages":[{"role":"user","content":"` + strings.Repeat("a", 100<<10) + `"}]}`
	primary := newStatusServer(t, http.StatusServiceUnavailable)
	second, third := newBodyRecorder(t), newBodyRecorder(t)
	f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
		{Name: "primary", BaseURL: primary.URL},
		{Name: "second", BaseURL: second.URL, Models: map[string]string{"small": "big"}},
		{Name: "third", BaseURL: third.URL},
	}})
	require.NoError(t, err)
	c := &http.Client{Transport: f.Wrap(nil)}
	t.Cleanup(c.CloseIdleConnections)
	counted := &countedBody{body: body}
	req, err := http.NewRequest(http.MethodPost, primary.URL+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	req.GetBody = counted.getBody

	resp, err := c.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	assert.Equal(t, "third", resp.Header.Get(TargetHeader))
	assert.Empty(t, second.received())
	assert.Equal(t, []string{body}, third.received())
	assert.Equal(t, int32(2), counted.calls.Load(), "GetBody calls: the third target's check and its copy")
	assert.Equal(t, int64(2*len(body)), counted.read.Load())
}

// A body whose copies differ in length from the one declared (a GetBody
// that breaks its contract) goes to no other target: net/http would fail
// it there, once its headers and part of it were sent. The caller gets the
// primary's answer.
func TestFallbackSendsALongBodyOfAnotherLengthThanDeclaredToNoOtherTarget(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 100<<10) + `"}]}`
	for _, declared := range []int{len(body) + 1, 2000, 100} {
		primary := newStatusServer(t, http.StatusServiceUnavailable)
		second := newBodyRecorder(t)
		f, err := NewFallback(FallbackConfig{MaxBufferedBody: 1024, Targets: []Target{
			{Name: "primary", BaseURL: primary.URL},
			{Name: "second", BaseURL: second.URL},
		}})
		require.NoError(t, err)
		c := &http.Client{Transport: f.Wrap(nil)}
		t.Cleanup(c.CloseIdleConnections)
		counted := &countedBody{body: body}
		sent := (body + " ")[:declared] // what the primary is sent is as long as declared
		req, err := http.NewRequest(http.MethodPost, primary.URL+"/chat/completions", strings.NewReader(sent))
		require.NoError(t, err)
		req.GetBody = counted.getBody

		resp, err := c.Do(req)
		require.NoError(t, err, "declared %d", declared)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), "declared %d", declared)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Empty(t, second.received(), "declared %d", declared)
	}
}

// newStatusServer is a loopback server that reads each request's body and
// answers status.
func newStatusServer(t *testing.T, status int) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		w.WriteHeader(status)
	}))
	t.Cleanup(s.Close)
	return s
}
