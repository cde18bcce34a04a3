package httpguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A base transport may answer with a nil Body (a RoundTripper need not set
// one for a 503 it makes up): a Fallback keeps such an answer, then drops
// it when a later target answers, without panicking.
func TestFallbackDropsAKeptAnswerWithoutBody(t *testing.T) {
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "a", BaseURL: "http://a.test/v1"}, {Name: "b", BaseURL: "http://b.test/v1"}, {Name: "c", BaseURL: "http://c.test/v1"},
	}})
	require.NoError(t, err)
	retrier, err := NewRetrier(RetryPolicy{})
	require.NoError(t, err)
	rt := Chain(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "c.test" {
			return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
		}
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Request: r}, nil // no Body
	}), f, retrier)
	req, err := http.NewRequest(http.MethodPost, "http://a.test/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err)

	resp, err := rt.RoundTrip(req)

	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "c", resp.Header.Get(TargetHeader))
}
