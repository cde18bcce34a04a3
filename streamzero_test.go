package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A relay translating Anthropic's Messages API whose message_delta reports
// a usage of zeros after the content (CLASP's proxy mode, jedarden/CLASP#16:
// "the message_delta SSE event always reports usage.output_tokens: 0")
// says nothing of what was billed, as a chat chunk's usage of zeros does
// not: the stream is charged its reservation, not message_start's
// placeholder.
func TestBudgetStreamWhoseFinalUsageCountsNothingIsChargedItsReservation(t *testing.T) {
	for name, c := range map[string]struct {
		path, body string
		pieces     []string
	}{
		"anthropic, message_delta of zeros": {"/v1/messages", finalAnthBody, []string{anthStart(20, 1), anthText("ninety tokens"),
			namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":0}}`), anthStop}},
	} {
		t.Run(name, func(t *testing.T) {
			s := settleStream(t, c.path, c.body, c.pieces...)
			assert.False(t, s.UsageKnown)
			assert.Equal(t, s.Reserved, s.Charged, "billed: 20 input and 90 output tokens, %v", 20*Money(1000)+90*Money(2000))
		})
	}
}
