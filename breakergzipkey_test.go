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

// postGzipChat posts a gzip chat request for model to url, its body
// replayable through GetBody or not.
func postGzipChat(t *testing.T, c *http.Client, url, model string, getBody bool) (int, error) {
	t.Helper()
	var body io.Reader = bytes.NewReader(gzipOf(t, chatBody(model, 16)))
	if !getBody {
		body = io.NopCloser(body)
	}
	req, err := http.NewRequest(http.MethodPost, url+"/chat/completions", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
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

		for range 2 {
			status, err := postGzipChat(t, c, srv.BaseURL(), "a", getBody)
			require.NoError(t, err)
			require.Equal(t, http.StatusServiceUnavailable, status)
		}
		_, err := postGzipChat(t, c, srv.BaseURL(), "a", getBody)
		require.ErrorIs(t, err, ErrCircuitOpen, "model a's circuit opened")
		status, err := postGzipChat(t, c, srv.BaseURL(), "b", getBody)
		require.NoError(t, err, "GetBody: %v", getBody)
		assert.Equal(t, http.StatusServiceUnavailable, status, "model b's circuit is its own")
		resp, err := c.Get(srv.BaseURL() + "/models")
		require.NoError(t, err, "a request without a model is not model a's")
		resp.Body.Close()

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
