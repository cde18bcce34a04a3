package httpguard

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A body the Budget keeps (see keptBody) gives its last bytes with io.EOF.
// These check, at loopback servers over HTTP/1 and HTTP/2, that each reader
// of it across the seams still sends it whole, once per attempt, and that
// the attempt is charged.

// A 307 resends the body from GetBody; a Limiter below the Budget reads it
// through a rewindingBody of its own; a stream's body is edited.
func TestBudgetKeptBodyIsSentWholeAgainOnARedirectThroughALimiter(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, size := range []int{1, 100, 20 << 10, 70 << 10, 300 << 10} {
			for _, stream := range []bool{false, true} {
				body, want := keptChat(stream, size)
				var mu sync.Mutex
				var got [][]byte
				var lens []int64
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					mu.Lock()
					got = append(got, b)
					lens = append(lens, r.ContentLength)
					mu.Unlock()
					if r.URL.Path == "/v1/old/chat/completions" {
						http.Redirect(w, r, "/v1/chat/completions", http.StatusTemporaryRedirect)
						return
					}
					answerOneToken(stream)(w, r, b)
				}))
				startTLS(t, srv, h2)
				b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, MaxBufferedBody: 1 << 20})
				l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9, MaxBufferedBody: 1 << 20})
				require.NoError(t, err)
				client := &http.Client{Transport: Chain(srv.Client().Transport, b, l)}
				postKept(t, client, srv.URL+"/v1/old/chat/completions", body)
				require.Len(t, got, 2)
				for i := range got {
					assert.Equal(t, len(want), len(got[i]), "h2=%v size=%d stream=%v try %d", h2, size, stream, i)
					assert.True(t, bytes.Equal(want, got[i]), "h2=%v size=%d stream=%v try %d", h2, size, stream, i)
				}
				assert.Positive(t, int64(b.Spent()))
			}
		}
	}
}

// With Expect: 100-continue the first attempt is answered before its body
// is sent; the Retrier's retry sends it whole.
func TestBudgetKeptBodyIsSentWholeOnRetryAfterAnEarlyAnswerToExpectContinue(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, size := range []int{10, 70 << 10} {
			body, _ := keptChat(false, size)
			var mu sync.Mutex
			var tries int
			var got []byte
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				tries++
				n := tries
				mu.Unlock()
				if n == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				got = b
				mu.Unlock()
				answerUsage(1, 1)(w, r, b)
			}))
			startTLS(t, srv, h2)
			tr := srv.Client().Transport.(*http.Transport)
			tr.ExpectContinueTimeout = time.Minute // the server's answer, not the timeout, ends the wait
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, MaxBufferedBody: 1 << 20})
			retrier, err := NewRetrier(RetryPolicy{MaxRetries: 2, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond})
			require.NoError(t, err)
			client := &http.Client{Transport: Chain(tr, retrier, b)}
			postKept(t, client, srv.URL+"/v1/chat/completions", body, "Expect", "100-continue")
			assert.Equal(t, 2, tries, "h2=%v size=%d", h2, size)
			assert.True(t, bytes.Equal(body, got), "h2=%v size=%d: got %d bytes", h2, size, len(got))
			assert.Positive(t, int64(b.Spent()))
		}
	}
}

// A Fallback between the Budget and a Limiter sends the kept (or edited)
// body to its next target whole after the primary answers a 503 unread.
func TestBudgetKeptBodyReachesTheNextTargetWholeThroughAFallbackAndLimiter(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, size := range []int{10, 70 << 10} {
			for _, stream := range []bool{false, true} {
				body, want := keptChat(stream, size)
				var mu sync.Mutex
				var got []byte
				var billed int
				primary := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusServiceUnavailable)
				}))
				second := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					mu.Lock()
					got = b
					billed++
					mu.Unlock()
					answerOneToken(stream)(w, r, b)
				}))
				startTLS(t, primary, h2)
				startTLS(t, second, h2)
				tr := primary.Client().Transport.(*http.Transport)
				b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, MaxBufferedBody: 1 << 20})
				f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: primary.URL + "/v1"}, {Name: "second", BaseURL: second.URL + "/v1"}}})
				require.NoError(t, err)
				l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9, MaxBufferedBody: 1 << 20})
				require.NoError(t, err)
				client := &http.Client{Transport: Chain(tr, b, f, l)}
				postKept(t, client, primary.URL+"/v1/chat/completions", body)
				assert.Equal(t, 1, billed)
				assert.True(t, bytes.Equal(want, got), "h2=%v size=%d stream=%v: got %d bytes want %d", h2, size, stream, len(got), len(want))
				assert.Positive(t, int64(b.Spent()))
			}
		}
	}
}

// keptChat returns a chat body with size bytes of content, a stream when
// stream is set, and what the server receives of it (a stream with the
// include_usage the Budget adds).
func keptChat(stream bool, size int) (body, sent []byte) {
	body = fmt.Appendf(nil, `{"model":"m","stream":%t,"max_tokens":5,"messages":[{"role":"user","content":%q}]}`, stream, strings.Repeat("x", size))
	if !stream {
		return body, body
	}
	return body, append([]byte(`{"stream_options":{"include_usage":true},`), body[1:]...)
}

// answerOneToken answers a chat, streamed or not, with a usage of one
// prompt and one completion token.
func answerOneToken(stream bool) func(http.ResponseWriter, *http.Request, []byte) {
	if stream {
		return answerStream(streamOf(`{"prompt_tokens":1,"completion_tokens":1}`, "a"))
	}
	return answerUsage(1, 1)
}

// postKept posts body to url through client, with the header's name-value
// pairs, and reads the answer to its end.
func postKept(t *testing.T, client *http.Client, url string, body []byte, header ...string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
