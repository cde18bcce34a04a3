package httpguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startedPipe is the read end of an io.Pipe (an upload written as it is
// read, without GetBody) that says when a Read has begun.
type startedPipe struct {
	*io.PipeReader
	reading chan struct{}
}

func (p *startedPipe) Read(b []byte) (int, error) {
	select {
	case <-p.reading:
	default:
		close(p.reading)
	}
	return p.PipeReader.Read(b)
}

func TestTheCallersContextEndsTheBufferingOfABodyWithoutGetBody(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {})
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	pr, pw := io.Pipe()
	defer pw.Close()
	body := &startedPipe{PipeReader: pr, reading: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL, body)
	require.NoError(t, err)
	require.Nil(t, req.GetBody, "a body the Retrier must buffer to retry")
	go func() {
		<-body.reading // the Retrier buffers it; its writer has nothing yet
		cancel()
	}()

	_, err = clientFor(t, r).Do(req)
	assert.ErrorIs(t, err, context.Canceled, "the caller's cancel ends the request, as it would net/http's")
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Zero(t, re.Attempts, "nothing was sent")
	assert.True(t, IsRefusal(err))
	assert.Zero(t, s.hits.Load())
	_, werr := pw.Write([]byte("x"))
	assert.ErrorIs(t, werr, io.ErrClosedPipe, "the body was closed")
}

func TestABodyWithoutGetBodyIsStillBufferedAndRetriedUnderACancelableContext(t *testing.T) {
	s := newServer(t, failFirst(1, 503, nil))
	r, _ := newTestRetrier(t, DefaultRetryPolicy())
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, `{"model":"gpt-4o-mini"}`)
		pw.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL, pr)
	require.NoError(t, err)
	resp, err := clientFor(t, r).Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.True(t, strings.HasPrefix(string(b), "ok"))
	assert.EqualValues(t, 2, s.hits.Load())
}

// Each layer that buffers a body without GetBody (to price it, to key it,
// to send it to another target) does so under the caller's context, as the
// Retrier does: a piped upload whose writer stalls held the request past a
// cancel for as long as the writer liked, where net/http alone returns.
func TestTheCallersContextEndsEachLayersBufferingOfABodyWithoutGetBody(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {})
	budget, err := NewBudget(BudgetConfig{Limit: Dollars(1), Prices: ExamplePrices()})
	require.NoError(t, err)
	breaker, err := NewBreaker(BreakerConfig{})
	require.NoError(t, err)
	fallback, err := NewFallback(FallbackConfig{Targets: []Target{{Name: "a", BaseURL: s.URL}, {Name: "b", BaseURL: s.URL}}})
	require.NoError(t, err)
	limiter, err := NewLimiter(LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 100_000})
	require.NoError(t, err)
	for _, c := range []struct {
		name  string
		layer Layer
	}{{"Budget", budget}, {"Breaker", breaker}, {"Fallback", fallback}, {"Limiter", limiter}} {
		t.Run(c.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			body := &startedPipe{PipeReader: pr, reading: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/chat/completions", body)
			require.NoError(t, err)
			go func() {
				<-body.reading // the layer buffers it; its writer has nothing yet
				cancel()
			}()

			_, err = (&http.Client{Transport: Chain(http.DefaultTransport, c.layer)}).Do(req)

			assert.ErrorIs(t, err, context.Canceled, "the caller's cancel ends the request, as it would net/http's")
			_, werr := pw.Write([]byte("x"))
			assert.ErrorIs(t, werr, io.ErrClosedPipe, "the body was closed")
		})
	}
	assert.Zero(t, s.hits.Load(), "nothing was sent")
}
