package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// postUpload posts a transcription upload for model to url, as multipart
// or urlencoded, its body replayable through GetBody or not.
func postUpload(t *testing.T, c *http.Client, url, model string, multi, getBody bool) (int, error) {
	t.Helper()
	body, ct := []byte("model="+model+"&prompt=hi"), "application/x-www-form-urlencoded"
	if multi {
		body, ct = multipartBody(t, "ID3", [2]string{"model", model})
	}
	return postBody(t, c, url+"/audio/transcriptions", body, http.Header{"Content-Type": {ct}}, getBody)
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

			requireKeyedByModel(t, c, srv.URL, func(model string) (int, error) {
				return postUpload(t, c, srv.URL, model, multi, getBody)
			}, "multipart: %v, GetBody: %v", multi, getBody)
		}
	}
}
