package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// brokenBody answers its first read with what it holds, and then err.
type brokenBody struct {
	io.ReadCloser
	err error
}

func (b *brokenBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF || n == 0 {
		return n, b.err
	}
	return n, err
}

// Was a bug: httputil.ReverseProxy writes lines of its own to its
// ErrorLog (a body that broke off while it was copied: "httputil:
// ReverseProxy read error during body copy: ...") with the error as it
// is, and the proxy wrote them to its log unmasked: a transport's error
// holding the URL it sent to, with a ?key= in its query, or a real key
// the upstream echoed, reached the operator's log, which the access log
// never lets them into.
func TestReverseProxysOwnLogLinesAreMasked(t *testing.T) {
	const queryKey = "AIzaSyQueryKey0123456789abcdef"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[]}\n\n")
	}))
	t.Cleanup(up.Close)
	base := NewTransport()
	t.Cleanup(base.CloseIdleConnections)
	c := Config{
		Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}},
		Tenants:   []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}},
		Getenv:    func(string) string { return "sk-real-openai-0123456789abcdef" },
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := base.RoundTrip(req)
			if err != nil {
				return nil, err
			}
			u := *req.URL
			u.RawQuery = "key=" + queryKey
			resp.Body = &brokenBody{resp.Body, &url.Error{Op: "Post", URL: u.String(),
				Err: fmt.Errorf("stream reset: the server said %q", req.Header.Get("Authorization"))}}
			return resp, nil
		}),
	}
	r := start(t, c)
	req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/chat/completions", strings.NewReader(streamBody))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer vk-chat")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client sees the broken body as a cut")
	r.lastLog(t, 1)
	logs := r.logs.String()
	require.Contains(t, logs, "read error during body copy", "ReverseProxy logged the broken body")
	assert.NotContains(t, logs, queryKey)
	assert.NotContains(t, logs, "sk-real-openai-0123456789abcdef")
	assert.Contains(t, logs, up.URL+"/v1/chat/completions", "the URL stays, without its query")
}

// The lines net/http writes hold errors as they came: what may be a
// secret in them is masked, the rest kept for the operator.
func TestALogLineOfNetHTTPIsMasked(t *testing.T) {
	r := newRedactor([]string{"sk-real-openai-0123456789abcdef"})
	for in, want := range map[string]string{
		`http: proxy error: Post "https://user:pw@api.example.com/v1/models?key=AIzaSy0123&alt=sse#x": EOF`: `http: proxy error: Post "https://api.example.com/v1/models": EOF`,
		`echoed sk-real-openai-0123456789abcdef`:                                                            `echoed *******************************`,
		`header map[Authorization:[Bearer sk-client-abc] X-Api-Key:[sk-ant-xyz] Accept:[*/*]]`:              `header map[Authorization:[Bearer ****] X-Api-Key:[****] Accept:[*/*]]`,
		`x-portkey-config: {"provider":"openai","api_key":"sk-inline-1","aws_secret_access_key": "abc"}`:    `x-portkey-config: {"provider":"openai","api_key":"****","aws_secret_access_key": "****"}`,
		`panic: token=abc&model=gpt`:                                         `panic: token=****&model=gpt`,
		`httputil: ReverseProxy read error during body copy: unexpected EOF`: `httputil: ReverseProxy read error during body copy: unexpected EOF`,
		`http: TLS handshake error from 127.0.0.1:5555: EOF`:                 `http: TLS handshake error from 127.0.0.1:5555: EOF`,
		`breaker: key "api.holysheep.ai deepseek-v3.2": circuit open`:        `breaker: key "api.holysheep.ai deepseek-v3.2": circuit open`,
	} {
		assert.Equal(t, want, r.line(in))
	}
}
