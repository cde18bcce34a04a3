package httpguard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fallback with no Retrier below took an attempt the next target had
// received for one a layer refused unsent when the caller's cause held a
// refusal (errgroup's first error, a sibling's ErrBudgetExceeded): it gave
// the caller the earlier target's 429, with no error, for a request whose
// caller had ended it.
func TestAFallbackDoesNotUnsendAnAttemptForARefusalCause(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer primary.Close()
	arrived := make(chan struct{})
	release := make(chan struct{})
	backup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	defer backup.Close()
	defer close(release)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: primary.URL + "/v1"},
		{Name: "backup", BaseURL: backup.URL + "/v1"},
	}})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, f)}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sibling := fmt.Errorf("post: %w", &RetryError{Err: Refuse(fmt.Errorf("httpguard: budget: %w", ErrBudgetExceeded))})
	go func() {
		<-arrived
		cancel(sibling)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, primary.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)
	resp, err := client.Do(req)
	if resp != nil {
		resp.Body.Close()
		t.Fatalf("the caller got %s's %d for a request it ended", resp.Header.Get(TargetHeader), resp.StatusCode)
	}
	assert.ErrorIs(t, err, sibling, "the caller's cause")
}
