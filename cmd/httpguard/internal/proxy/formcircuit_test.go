package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the Breaker keys a form upload's circuit by its model field
// (an audio transcription's "model"), and the proxy looked for the circuit
// of the model it reads from JSON bodies only: none for a form, so that a
// transcription refused by an open circuit was told Retry-After: 1 for a
// circuit open a minute, and its access log named no model.
func TestAFormsCircuitOpenSaysWhenItReopens(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY",
		Breaker: &BreakerSpec{ConsecutiveFailures: 2, MinCalls: -1, CoolDown: time.Minute}}}, Getenv: realKeys,
		Retry:   RetrySpec{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	multipart := "--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n" +
		"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--XX--\r\n"
	for _, tc := range []struct{ contentType, body string }{
		{"multipart/form-data; boundary=XX", multipart},
		{"application/x-www-form-urlencoded", "model=whisper-1&input=hi"},
	} {
		var resp *http.Response
		for range 3 {
			req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/audio/transcriptions", strings.NewReader(tc.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.contentType)
			req.Header.Set("Authorization", "Bearer vk-chat")
			resp, err = r.client.Do(req)
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, tc.contentType)
		assert.Equal(t, "60", resp.Header.Get("Retry-After"), tc.contentType)
	}
	assert.Equal(t, "whisper-1", r.lastLog(t, 6)["model"], "the log names the form's model")
}
