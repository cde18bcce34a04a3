package httpguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A key read from a file keeps its newline: net/http refuses to send such
// a header, on every request, so a Fallback built with it would never
// reach that target, its callers silently getting the primary's failure.
// The constructor says so, naming the header but not its value.
func TestNewFallbackRefusesAHeaderNetHTTPWouldNeverSend(t *testing.T) {
	primary := Target{BaseURL: "https://api.holysheep.ai/v1"}
	for name, tc := range map[string]struct {
		h    http.Header
		want string
	}{
		"value ending in a newline": {http.Header{"Authorization": {"Bearer sk-second-secret\n"}}, "Targets[1]: Header: the value of Authorization is not a valid HTTP header value"},
		"value with a NUL":          {http.Header{"X-Api-Key": {"sk-second\x00secret"}}, "Targets[1]: Header: the value of X-Api-Key is not a valid HTTP header value"},
		"name with a colon":         {http.Header{"Authorization:": {"Bearer sk-second-secret"}}, "Targets[1]: Header: a name that is not a valid HTTP header name"},
		"empty name":                {http.Header{"": {"sk-second-secret"}}, "Targets[1]: Header: a name that is not a valid HTTP header name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFallback(FallbackConfig{Targets: []Target{primary, {BaseURL: "https://api.openai.com/v1", Header: tc.h}}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "secret")
		})
	}
}

// A tab is a valid header value: the check refuses only what net/http
// would, and such a target is reached.
func TestFallbackWithAValidHeaderReachesTheNextTarget(t *testing.T) {
	primary := newFaultServer(t, httpguardtest.Config{})
	second := newFaultServer(t, httpguardtest.Config{})
	require.NoError(t, primary.StartOutage(httpguardtest.ServiceUnavailable()))
	f, err := NewFallback(FallbackConfig{Targets: []Target{
		{Name: "primary", BaseURL: primary.BaseURL()},
		{Name: "second", BaseURL: second.BaseURL(), Header: http.Header{"Authorization": {"Bearer sk-second\t"}}},
	}})
	require.NoError(t, err, "a tab is a valid header value")
	c := clientFor(t, f)
	resp, err := c.Post(primary.BaseURL()+"/chat/completions", "application/json", strings.NewReader(chatBody("m", 16)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "second", resp.Header.Get(TargetHeader))
}
