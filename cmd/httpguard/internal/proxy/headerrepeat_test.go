package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: header names are case-insensitive, and an upstream's or a
// fallback's headers naming one twice in two spellings
// ({x-portkey-provider: openai, X-Portkey-Provider: anthropic}) kept the
// last without a word, where a key repeated as written is an error.
func TestAHeaderRepeatedInAnotherCaseIsRefused(t *testing.T) {
	_, err := ParseFile(strings.NewReader("upstreams:\n  - prefix: /v1\n    url: https://api.holysheep.ai/v1\n"+
		"    headers:\n      x-portkey-provider: openai\n      X-Portkey-Provider: anthropic\n"), "proxy.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `proxy.yaml:6: headers repeat "X-Portkey-Provider"`)
}
