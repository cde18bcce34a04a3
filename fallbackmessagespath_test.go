package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// Servers that route on the decoded path (Starlette's, which LiteLLM's
// proxy runs on; most that decode an escaped letter) serve /v1%2Fmessages
// and /v1/%6Dessages as /v1/messages. The Budget read the path as written
// and reserved Anthropic's server-side fallbacks on it at the dearest
// model only, as a relay's, while every model they try is billed.
func TestBudgetSumsAnthropicsFallbacksOnAMessagesPathWrittenEscaped(t *testing.T) {
	fable, opus := fallbackPrices["claude-fable-5"], fallbackPrices["claude-opus-4-8"]
	body := fallbackBody(`"fallbacks":[{"model":"claude-opus-4-8"},{"model":"claude-fable-5"}],`)
	want := 2*hopCost(body, fable, 64) + hopCost(body, opus, 64)
	assert.Equal(t, want, reservedFor(t, "/v1/messages", body))
	assert.Equal(t, want, reservedFor(t, "/v1%2Fmessages", body), "the path decoded is /v1/messages")
	assert.Equal(t, want, reservedFor(t, "/v1/%6Dessages", body), "the path decoded is /v1/messages")
}
