package httpguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The layers' waits watched the request's context alone, not its Cancel
// channel (deprecated, still honoured by net/http, kept by older code): a
// caller that closed it while a Retrier waited between attempts, while a
// Limiter queued the request, or while a Budget waited for room, got its
// answer only once the wait was over (a backoff of up to MaxDelay, a
// server's Retry-After, a MaxWait). Each wait now ends with the channel;
// nothing more is sent.
func TestLayersStopWaitingWhenTheRequestsCancelChannelCloses(t *testing.T) {
	body := chatBody("m", 100)
	for _, c := range []struct {
		name  string
		layer func(t *testing.T, cancel chan struct{}) Layer
		// warm sends a request first, without a Cancel, which holds the
		// layer's turn or money while the call waits; without it the
		// server answers 503.
		warm   bool
		closed bool // the Cancel channel is closed before the call
	}{
		{"Retrier's backoff", func(t *testing.T, cancel chan struct{}) Layer {
			r, err := NewRetrier(RetryPolicy{MaxRetries: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
				OnRetry: func(RetryEvent) { close(cancel) }})
			require.NoError(t, err)
			r.sleep = func(ctx context.Context, _ time.Duration) error { // a long backoff
				<-ctx.Done()
				return ctx.Err()
			}
			return r
		}, false, false},
		{"Limiter's queue", func(t *testing.T, _ chan struct{}) Layer {
			l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1, MaxWait: time.Minute})
			require.NoError(t, err)
			l.sleep = func(ctx context.Context, _ time.Duration, _ <-chan struct{}) (bool, error) { // a long turn
				<-ctx.Done()
				return false, ctx.Err()
			}
			return l
		}, true, true},
		{"Budget's wait for room", func(t *testing.T, _ chan struct{}) Layer {
			return newTestBudget(t, BudgetConfig{Limit: reservation(body, 100) * 3 / 2, MaxWait: time.Minute})
		}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			release := make(chan struct{})
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
				if c.warm && r.Header.Get("X-Warm") != "" {
					<-release // holds its reservation while the call waits
				}
				if !c.warm {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				answerUsage(10, 10)(w, r, b)
			})
			defer close(release)
			cancel := make(chan struct{})
			client := api.client(t, c.layer(t, cancel))
			if c.warm {
				req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
				require.NoError(t, err)
				req.Header.Set("X-Warm", "1")
				go func() {
					if resp, err := client.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
				require.Eventually(t, func() bool { return api.hits.Load() == 1 }, 2*time.Second, time.Millisecond)
			}
			if c.closed {
				close(cancel)
			}
			ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
			defer stop()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(body))
			require.NoError(t, err)
			req.Cancel = cancel //nolint:staticcheck // what older callers do
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			require.Error(t, err)
			assert.NoError(t, ctx.Err(), "the wait went on past the closed Cancel channel: %v", err)
			assert.Equal(t, int64(1), api.hits.Load(), "the warming request, or the call's one attempt")
		})
	}
}
