package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// postBody posts body to url with the header's fields, replayable
// through GetBody or not, and returns the answer's status, its body read.
func postBody(t *testing.T, c *http.Client, url string, body []byte, header http.Header, getBody bool) (int, error) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if !getBody {
		r = io.NopCloser(r)
	}
	req, err := http.NewRequest(http.MethodPost, url, r)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// requireKeyedByModel checks, through c, whose Breaker opens after two
// failures in a row, to a server at base failing every POST, that post's
// requests for model a open model a's circuit alone: a request for model
// b, and GET base/models, which names none, are not refused by it.
func requireKeyedByModel(t *testing.T, c *http.Client, base string, post func(model string) (int, error), msgAndArgs ...any) {
	t.Helper()
	for range 2 {
		status, err := post("a")
		require.NoError(t, err, msgAndArgs...)
		require.Equal(t, http.StatusServiceUnavailable, status, msgAndArgs...)
	}
	_, err := post("a")
	require.ErrorIs(t, err, ErrCircuitOpen, "model a's circuit opened")
	status, err := post("b")
	require.NoError(t, err, msgAndArgs...)
	assert.Equal(t, http.StatusServiceUnavailable, status, "model b's circuit is its own")
	resp, err := c.Get(base + "/models")
	require.NoError(t, err, "a request without a model is not model a's")
	resp.Body.Close()
}

// postGzipChat posts a gzip chat request for model to url, its body
// replayable through GetBody or not.
func postGzipChat(t *testing.T, c *http.Client, url, model string, getBody bool) (int, error) {
	t.Helper()
	return postBody(t, c, url+"/chat/completions", gzipOf(t, chatBody(model, 16)),
		http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, getBody)
}

// A gzip body was keyed without its model: every gzip body, whatever its
// model, and every request that names none (GET /models) shared the
// host's circuit, so that one model's outage refused all of them. A gzip
// body is read decompressed for its model.
func TestBreakerKeysAGzipBodyByItsModel(t *testing.T) {
	for _, getBody := range []bool{true, false} {
		srv := newFaultServer(t, httpguardtest.Config{})
		require.NoError(t, srv.StartOutage(httpguardtest.ServiceUnavailable()))
		r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 2})
		c := clientFor(t, r.b)

		requireKeyedByModel(t, c, srv.BaseURL(), func(model string) (int, error) {
			return postGzipChat(t, c, srv.BaseURL(), model, getBody)
		}, "GetBody: %v", getBody)

		host := strings.TrimPrefix(srv.URL, "http://")
		states := map[string]CircuitState{}
		for _, s := range r.b.Stats() {
			states[s.Key] = s.State
		}
		assert.Equal(t, map[string]CircuitState{host + " a": CircuitOpen, host + " b": CircuitClosed, host + " ": CircuitClosed}, states)
	}
}

// A gzip body is decompressed up to MaxBufferedBody bytes: one that
// decompresses to more is keyed without a model, as a longer body is; a
// body compressed otherwise, or not the gzip it says, names none.
func TestBreakerReadsAGzipBodyForItsModelWithinMaxBufferedBody(t *testing.T) {
	var models []string
	r := newBreakerRig(t, BreakerConfig{MaxBufferedBody: 1024, Key: func(_ *http.Request, model string) string {
		models = append(models, model)
		return model
	}})
	c := clientFor(t, r.b)
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {})
	for _, b := range []struct {
		body, encoding string
	}{
		{string(gzipOf(t, `{"model":"a","messages":[]}`)), "gzip"},
		{string(gzipOf(t, `{"messages":[{"content":"`+strings.Repeat("a", 2048)+`"}],"model":"long"}`)), "gzip"},
		{string(gzipOf(t, `{"model":"br","messages":[]}`)), "br"},
		{`{"model":"plain","messages":[]}`, "gzip"},
	} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/chat/completions", strings.NewReader(b.body))
		require.NoError(t, err)
		req.Header.Set("Content-Encoding", b.encoding)
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Equal(t, []string{"a", "", "", "plain"}, models)
}
