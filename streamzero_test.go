package httpguard

import (
	"io"
	"net/http"
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

// So is a JSON answer's usage of zeros: a relay's default usage object, no
// count of the answer the provider billed. Charged 0 before (found by the
// stream hunt: the streamed answer got its reservation, the same answer
// whole got nothing).
func TestBudgetJSONAnswerWhoseUsageCountsNothingIsChargedItsReservation(t *testing.T) {
	for _, usage := range []string{
		`{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`,
		`{"input_tokens":0,"output_tokens":0}`,
		`{"prompt_tokens":0,"completion_tokens":0,"prompt_tokens_details":{"cached_tokens":0}}`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a long answer"},"finish_reason":"stop"}],"usage":`+usage+`}`)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
		readThrough(t, api, b, "/v1/chat/completions", chatBody("m", 90))
		assert.Positive(t, got.Reserved, usage)
		assert.Equal(t, got.Reserved, got.Charged, "%s: a usage of zeros is no usage", usage)
	}
}
