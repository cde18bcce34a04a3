package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// postUpload posts a transcription upload for model to url, as multipart
// or urlencoded, its body replayable through GetBody or not.
func postUpload(t *testing.T, c *http.Client, url, model string, multi, getBody bool) (int, error) {
	t.Helper()
	body, ct := []byte("model="+model+"&prompt=hi"), "application/x-www-form-urlencoded"
	if multi {
		body, ct = multipartBody(t, "ID3", [2]string{"model", model})
	}
	var r io.Reader = bytes.NewReader(body)
	if !getBody {
		r = io.NopCloser(r)
	}
	req, err := http.NewRequest(http.MethodPost, url+"/audio/transcriptions", r)
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A form was keyed without its model: every upload to
// /audio/transcriptions, whatever its model, and every request that names
// none (GET /models) shared the host's circuit, so that one model's
// outage refused all of them, where JSON bodies have a circuit per model.
// A form is read for its model field.
func TestBreakerKeysAFormByItsModel(t *testing.T) {
	for _, multi := range []bool{true, false} {
		for _, getBody := range []bool{true, false} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				io.Copy(io.Discard, req.Body)
				if req.Method == http.MethodPost {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			}))
			t.Cleanup(srv.Close)
			r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 2})
			c := clientFor(t, r.b)

			for range 2 {
				status, err := postUpload(t, c, srv.URL, "a", multi, getBody)
				require.NoError(t, err)
				require.Equal(t, http.StatusServiceUnavailable, status)
			}
			_, err := postUpload(t, c, srv.URL, "a", multi, getBody)
			require.ErrorIs(t, err, ErrCircuitOpen, "model a's circuit opened")
			status, err := postUpload(t, c, srv.URL, "b", multi, getBody)
			require.NoError(t, err, "multipart: %v, GetBody: %v", multi, getBody)
			assert.Equal(t, http.StatusServiceUnavailable, status, "model b's circuit is its own")
			resp, err := c.Get(srv.URL + "/models")
			require.NoError(t, err, "a request without a model is not model a's")
			resp.Body.Close()
		}
	}
}
