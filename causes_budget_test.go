package httpguard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Budget's wait for room, ended by a deadline the caller gave a cause
// (WithTimeoutCause), refused with ctx.Err(): the cause was lost.
func TestABudgetWaitEndedByADeadlineKeepsItsCause(t *testing.T) {
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer api.Close()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	b, err := NewBudget(BudgetConfig{Limit: Dollar / 20, Prices: ExamplePrices(), MaxWait: time.Hour})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, b)}
	body := `{"model":"deepseek-v3.2","max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}`

	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, api.URL+"/v1/chat/completions", strings.NewReader(body))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-arrived // it holds the room
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, errCallerGaveUp)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	_, err = client.Do(req)
	close(release)
	require.NoError(t, <-first)
	require.Error(t, err)
	require.ErrorIs(t, err, ErrBudgetExceeded, "%v", err)
	assert.ErrorIs(t, err, errCallerGaveUp, "the caller's cause")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a deadline's end")
}
