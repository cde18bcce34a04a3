package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// longRealKey is a real key long enough to be masked (minMaskedKey).
const longRealKey = "sk-proj-Xk9c2Lw7RtQ1vB8nZ3yH5mJ0pA6dF4gE"

// Was a bug: an upstream that echoes the real key in a body it encodes
// as it was not asked to (the transport asks for gzip and undoes only
// that: deflate, x-gzip, gzip twice, brotli), handed the key to the
// tenant, whose client decodes such a body: the proxy masks keys in the
// bytes it writes, which were compressed.
func TestAnAnswerEncodedUnaskedShowsNoTenantTheRealKey(t *testing.T) {
	encodings := map[string]func(io.Writer) io.WriteCloser{
		"deflate": func(w io.Writer) io.WriteCloser { fw, _ := flate.NewWriter(w, flate.DefaultCompression); return fw },
		"x-gzip":  func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) },
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		enc := r.URL.Query().Get("encoding")
		var buf bytes.Buffer
		zw := encodings[enc](&buf)
		io.WriteString(zw, `{"error":{"message":"key `+key+` may not use this model","type":"invalid_request_error"}}`)
		zw.Close()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", enc)
		w.WriteHeader(http.StatusBadRequest)
		w.Write(buf.Bytes())
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Getenv: func(string) string { return longRealKey }, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	for i, enc := range []string{"deflate", "x-gzip"} {
		resp, body := r.post(t, "/v1/chat/completions?encoding="+enc, chatBody, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode, enc)
		assert.Empty(t, resp.Header.Get("Content-Encoding"), enc)
		_, code, _ := errorOf(t, body)
		assert.Equal(t, "upstream_bad_answer", code, enc)
		assert.NotContains(t, string(body), longRealKey, enc)
		assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"), enc)
		rec := r.lastLog(t, i+1)
		assert.EqualValues(t, 502, rec["status"], enc)
		assert.NotEqual(t, "$0", rec["spend"], "%s: the attempt reached the upstream: it is charged", enc)
	}
}

// An answer whose Content-Encoding is identity, or which has no body (a
// 204, an answer to HEAD), is read as it comes.
func TestAnAnswerInTheIdentityEncodingPasses(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Encoding", r.URL.Query().Get("encoding"))
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "120") // what a GET would get
			return
		}
		if r.URL.Query().Get("empty") != "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Getenv: func(string) string { return longRealKey }, Prices: testPrices, // a budget's layer wraps every answer's body
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp, body := r.post(t, "/v1/chat/completions?encoding=identity", chatBody, "Authorization", "Bearer vk-chat")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), `"ok"`)
	resp, _ = r.post(t, "/v1/chat/completions?encoding=br&empty=1", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	req, err := http.NewRequest(http.MethodHead, r.URL+"/v1/files?encoding=br", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer vk-chat")
	resp, err = r.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "an answer to HEAD")
}
