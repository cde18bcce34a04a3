package httpguardtest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Fault is a value the server copies: its Header too, so that a test
// reusing a header map for its next fault, or changing it while the server
// answers, does not rewrite the faults already handed over.

func TestChangingAFaultsHeaderAfterEnqueueChangesNothing(t *testing.T) {
	s := start(t, Config{})
	f := RateLimited(0)
	f.Header.Set("Retry-After-Ms", "20")
	require.NoError(t, s.Enqueue(f))
	f.Header.Set("Retry-After-Ms", "40")
	require.NoError(t, s.Enqueue(f))

	_, h, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, "20", h.Get("Retry-After-Ms"), "the first fault")
	_, h, _ = do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, "40", h.Get("Retry-After-Ms"), "the second fault")
}

func TestChangingAnOutagesHeaderAfterStartOutageChangesNothing(t *testing.T) {
	s := start(t, Config{})
	f := ServiceUnavailable()
	f.Header = http.Header{"X-Outage": {"one"}}
	require.NoError(t, s.StartOutage(f))
	f.Header.Set("X-Outage", "two")

	_, h, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, "one", h.Get("X-Outage"))
}

func TestChangingAConfigsFaultHeaderAfterNewServerChangesNothing(t *testing.T) {
	f := ServiceUnavailable()
	f.Header = http.Header{"X-Fault": {"one"}}
	c := Config{FaultRate: 1, Faults: []Fault{f}}
	s := start(t, c)
	f.Header.Set("X-Fault", "two")

	_, h, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, "one", h.Get("X-Fault"))
}
