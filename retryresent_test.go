package httpguard

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// net/http sends a request again on its own, below the Retrier, when its
// HTTP/2 stream is reset with REFUSED_STREAM (up to seven times, waiting
// 1s, 2s, ... 32s between them) or with PROTOCOL_ERROR (then on a new
// connection each time, at once and without end). A server that resets
// every stream, as an overloaded one does, must see one request per
// attempt the Retrier sends, and the Retrier's waits, not net/http's.
func TestRetrierAloneSendsEachAttemptOnceWhenAnHTTP2StreamIsReset(t *testing.T) {
	for _, c := range []struct {
		name string
		code uint32
	}{{"PROTOCOL_ERROR", 1}, {"REFUSED_STREAM", 7}} {
		for _, sdk := range []bool{false, true} {
			name := c.name
			if sdk {
				name += "/GetBody rewinding the Body's reader"
			}
			t.Run(name, func(t *testing.T) {
				srv := newH2Resetter(t, c.code, 1<<40, "", func([]byte) Money { return 0 }, `{}`)
				p := DefaultRetryPolicy()
				p.MaxRetries = 2
				r, sl := newTestRetrier(t, p)
				client := &http.Client{Transport: Chain(h2cTransport(t), r), Timeout: 3 * time.Second}
				req, err := http.NewRequest(http.MethodPost, srv.URL()+"/v1/chat/completions", strings.NewReader(writeOnceBody))
				require.NoError(t, err)
				if sdk { // as openai-go's and anthropic-sdk-go's
					rd := bytes.NewReader([]byte(writeOnceBody))
					req.Body = io.NopCloser(rd)
					req.GetBody = func() (io.ReadCloser, error) { rd.Seek(0, io.SeekStart); return io.NopCloser(rd), nil }
				}

				sendsThreeAttemptsOnce(t, client, req, srv, sl)
			})
		}
	}
}

// The GetBody an attempt is sent down with hands out the body to the
// layers below until net/http has read a byte of the attempt's Body, and
// leaves the Body as it was: net/http writes an in-memory body with the
// request's headers.
func TestAttemptGetBodyServesTheLayersBelowUntilTheBodyIsSent(t *testing.T) {
	req, err := http.NewRequest(http.MethodPost, "http://api.test/", strings.NewReader("hello"))
	require.NoError(t, err)
	a := gated(req, req.Body)
	require.NotSame(t, req, a)
	assert.Equal(t, req.Body, a.Body, "the in-memory Body net/http recognises")
	assert.True(t, freshGetBody(a.GetBody), "the Budget may still read the Body itself")
	for range 2 {
		rc, err := a.GetBody()
		require.NoError(t, err)
		b, _ := io.ReadAll(rc)
		assert.Equal(t, "hello", string(b))
	}
	buf := make([]byte, 1)
	_, err = a.Body.Read(buf)
	require.NoError(t, err)
	_, err = a.GetBody()
	assert.ErrorIs(t, err, errSentBelow)
	_, err = req.GetBody()
	assert.NoError(t, err, "the caller's request is not changed")
}

// A Retrier right above a Budget (the recommended order) leaves the gate
// to the Budget: a priced attempt goes down in the Budget's copy of the
// request, which net/http sends again once, on a second reservation, when
// the server turns its stream away with REFUSED_STREAM (see holdAgain),
// and one the Budget passes unpriced (exempt, or free: counting tokens)
// behind a resendGate the Budget puts up for it, once. Either way a server
// that resets every stream reads at most two requests per attempt.
func TestRetrierAboveABudgetSendsEachAttemptAtMostTwiceWhenAnHTTP2StreamIsReset(t *testing.T) {
	for _, c := range []struct {
		name string
		code uint32
	}{{"PROTOCOL_ERROR", 1}, {"REFUSED_STREAM", 7}} {
		for _, path := range []string{"/v1/chat/completions", "/v1/audio/transcriptions", "/v1/messages/count_tokens"} {
			t.Run(c.name+path, func(t *testing.T) {
				srv := newH2Resetter(t, c.code, 1<<40, "", func([]byte) Money { return 0 }, `{}`)
				p := DefaultRetryPolicy()
				p.MaxRetries = 2
				r, sl := newTestRetrier(t, p)
				budget := newTestBudget(t, BudgetConfig{Limit: Dollar, Exempt: func(r *http.Request) bool {
					return strings.HasSuffix(r.URL.Path, "/audio/transcriptions")
				}})
				rt := Chain(h2cTransport(t), r, budget)
				require.False(t, rt.(*retryTransport).gate, "the Budget below gates")
				client := &http.Client{Transport: rt, Timeout: 3 * time.Second}
				req, err := http.NewRequest(http.MethodPost, srv.URL()+path, strings.NewReader(writeOnceBody))
				require.NoError(t, err)

				sends := 1
				if path == "/v1/chat/completions" { // net/http's resend on a second reservation, when it makes one
					sends = 2
				}
				sendsThreeAttempts(t, client, req, srv, sl, sends)
			})
		}
	}
}

// sendsThreeAttemptsOnce sends req through client, a Retrier of 2 retries
// above srv, a server that resets every stream, and checks that each of
// its 3 attempts reached srv once, after the Retrier's own waits only.
func sendsThreeAttemptsOnce(t *testing.T, client *http.Client, req *http.Request, srv *h2Resetter, sl *sleeps) {
	t.Helper()
	sendsThreeAttempts(t, client, req, srv, sl, 1)
}

// sendsThreeAttempts is sendsThreeAttemptsOnce for attempts that each
// reach srv at most sends times.
func sendsThreeAttempts(t *testing.T, client *http.Client, req *http.Request, srv *h2Resetter, sl *sleeps, sends int) {
	t.Helper()
	start := time.Now()
	_, err := client.Do(req)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Attempts)
	assert.False(t, errors.Is(err, context.DeadlineExceeded), "the call ended by itself: %v", err)
	assert.GreaterOrEqual(t, srv.reads.Load(), int64(3), "each attempt reached the server")
	assert.LessOrEqual(t, srv.reads.Load(), int64(3*sends), "the requests the server read per attempt")
	assert.Len(t, sl.all(), 2, "the Retrier's own waits")
	assert.Less(t, time.Since(start), time.Second, "no wait of net/http's own")
}
