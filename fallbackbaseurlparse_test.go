package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A BaseURL whose password holds a /, ? or # unescaped (a base64 one) does
// not parse: its authority ends there, the rest of the user name and
// password read as the host's port, which url.Parse quoted in its error,
// and NewFallback with it. Since a BaseURL's user info is sent as Basic
// authorization, a password is what such a URL holds.
func TestFallbackBaseURLParseErrorsHoldNoPassword(t *testing.T) {
	for _, base := range []string{
		"https://user:s3cr3t/pass@api.test/v1",
		"https://user:s3cr3t#pass@api.test/v1",
		"https://user:s3cr3t?pass@api.test/v1",
		"https://user:s3cr3t@api .test/v1",
		"https://user:s3cr%zzt@api.test/v1",
	} {
		_, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: "https://primary.test/v1"}, {BaseURL: base}}})
		require.Error(t, err, base)
		assert.NotContains(t, err.Error(), "s3cr", base)
		assert.Contains(t, err.Error(), "Targets[1]: BaseURL", base)
	}
}
