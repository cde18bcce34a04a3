package httpguard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2cServer is a loopback server speaking HTTP/2 without TLS (and HTTP/1).
func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A Fallback used without a Retrier below it sent a request to a primary
// that resets every HTTP/2 stream with PROTOCOL_ERROR, and net/http sent
// it again there on its own, at once and without end: the request never
// reached the next target, which answers, and the call ended only at the
// caller's deadline (never without one), after thousands of requests to
// the primary. The Fallback now sends a target's request down as a
// Retrier sends an attempt: net/http's resend fails it, and the next
// target has it.
func TestFallbackMovesOnWhenNetHTTPWouldResendWithoutEnd(t *testing.T) {
	for _, c := range []struct {
		name     string
		method   string
		path     string
		body     func() io.Reader
		maxReads int64
	}{
		{"GET", http.MethodGet, "/v1/models", func() io.Reader { return nil }, 3},
		{"POST", http.MethodPost, "/v1/chat/completions", func() io.Reader { return strings.NewReader(writeOnceBody) }, 1},
		{"POST/no-GetBody", http.MethodPost, "/v1/chat/completions", func() io.Reader { return onlyReader{strings.NewReader(writeOnceBody)} }, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			primary := newH2Resetter(t, 1, 1_000_000, "", func([]byte) Money { return 0 }, "{}")
			var got atomic.Int64
			second := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				got.Add(1)
				io.WriteString(w, `{"ok":true}`)
			}))
			f, err := NewFallback(FallbackConfig{Targets: []Target{
				{Name: "primary", BaseURL: primary.URL() + "/v1"},
				{Name: "second", BaseURL: second.URL + "/v1"},
			}})
			require.NoError(t, err)
			tr := h2cTransport(t)
			closeDialedConns(t, tr)
			client := &http.Client{Transport: Chain(tr, f)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, c.method, primary.URL()+c.path, c.body())
			require.NoError(t, err)
			resp, err := client.Do(req)
			t.Logf("err %v; the primary got %d requests", err, primary.reads.Load())
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, `{"ok":true}`, string(b))
			assert.Equal(t, int64(1), got.Load())
			assert.LessOrEqual(t, primary.reads.Load(), c.maxReads, "net/http sent the request again to the primary on its own")
		})
	}
}
