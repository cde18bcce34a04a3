package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A form was keyed without its model: every upload to
// /audio/transcriptions, whatever its model, took its turn in the key of
// the requests that name none, where a JSON body takes its model's. A
// form is read for its model field, up to MaxBufferedBody, and sent byte
// for byte; a longer one, or one servers may read differently, names none.
func TestLimiterKeysAFormByItsModel(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	var models []string
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9, MaxBufferedBody: 1024,
		Key: func(_ *http.Request, model string) string {
			mu.Lock()
			defer mu.Unlock()
			models = append(models, model)
			return model
		}})
	require.NoError(t, err)
	c := clientFor(t, l)
	multi, multiType := multipartBody(t, "ID3", [2]string{"model", "whisper-1"})
	long, longType := multipartBody(t, strings.Repeat("a", 2048), [2]string{"model", "whisper-1"})
	for name, tc := range map[string]struct{ body, ct, want string }{
		"multipart":              {string(multi), multiType, "whisper-1"},
		"urlencoded":             {"prompt=hi&model=whisper%2D1", "application/x-www-form-urlencoded", "whisper-1"},
		"longer than the buffer": {string(long), longType, ""},
		"two models":             {"model=whisper-1&model=b", "application/x-www-form-urlencoded", ""},
	} {
		for _, getBody := range []bool{true, false} {
			mu.Lock()
			got, models = nil, nil
			mu.Unlock()
			var r io.Reader = bytes.NewReader([]byte(tc.body))
			if !getBody {
				r = io.NopCloser(r)
			}
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/audio/transcriptions", r)
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.ct)
			resp, err := c.Do(req)
			require.NoError(t, err, name)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			assert.Equal(t, []string{tc.want}, models, "%s, GetBody: %v", name, getBody)
			assert.Equal(t, []string{tc.body}, got, "%s, GetBody: %v", name, getBody)
			mu.Unlock()
		}
	}
}
