package httpguard

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a free moderation (OpenAI's omni-moderation-latest) made
// with http.NewRequest, as go-openai and most Go code make requests, was
// refused unsent in the recommended stack, where a Breaker sits between
// the Retrier and the Budget: the Budget read the body whole to price it,
// then, finding it free, asked GetBody for a copy to send, and the
// Retrier's resend gate, seeing the body read, took that for net/http
// sending it again and failed it. Every call failed, retries included,
// and none reached the server. The Budget now sends the bytes it read,
// without a GetBody, which the Limiter below would call.
func TestBudgetSendsAFreeModerationUnderARetrierAboveABreaker(t *testing.T) {
	var hits atomic.Int64
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got = b
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false}]}`)
	}))
	defer srv.Close()
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	p := DefaultRetryPolicy()
	p.BaseDelay, p.MaxDelay, p.Jitter = time.Millisecond, time.Millisecond, 0
	r, err := NewRetrier(p)
	require.NoError(t, err)
	br, err := NewBreaker(BreakerConfig{})
	require.NoError(t, err)
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 100, Burst: 10})
	require.NoError(t, err)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	const body = `{"input":"hi","model":"omni-moderation-latest"}`
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/v1/moderations", bytes.NewBufferString(body))
	require.NoError(t, err)

	resp, err := (&http.Client{Transport: Chain(tr, r, br, b, l)}).Do(req)

	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 2, hits.Load(), "the 503, then its retry")
	assert.Equal(t, body, string(got))
	assert.Zero(t, b.Spent())
}
