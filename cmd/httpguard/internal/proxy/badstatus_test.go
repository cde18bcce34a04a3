package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
)

// Was a bug: an upstream answering a status net/http refuses to write
// (below 100, which an HTTP/1 status line can carry as 099, or above 999,
// which HTTP/2's :status can) made the handler panic in ReverseProxy's
// WriteHeader: the client's connection was cut with no answer, the log got
// a panic and its stack, and the upstream's answer was never closed.
func TestAnUpstreamsStatusOutsideHTTPsIsABadAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 099 Odd\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys, Prices: testPrices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: httpguard.Dollar}}}})
	resp, body := r.post(t, "/v1/chat/completions", chatBody, "Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	_, code, _ := errorOf(t, body)
	assert.Equal(t, "upstream_bad_answer", code)
	assert.Equal(t, "false", resp.Header.Get("X-Should-Retry"))
	rec := r.lastLog(t, 1)
	assert.EqualValues(t, 502, rec["status"])
	assert.NotEqual(t, "$0", rec["spend"], "the attempt reached the upstream: it is charged")
	assert.NotContains(t, r.logs.String(), "panic")
}
