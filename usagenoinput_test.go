package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A usage that names no count of the input says nothing of the prompt the
// provider billed: a relay that drops Anthropic's message_start (whose
// usage alone holds input_tokens) or writes a usage of output_tokens
// alone. It was read as zero input tokens, known: a 2,000-token prompt was
// charged 90 output tokens. The answer is charged its reservation, or the
// usage when it costs more, as a usage that does not add up is.
func TestBudgetUsageWithoutAnInputCountIsChargedItsReservation(t *testing.T) {
	prompt := strings.Repeat("x", 2_000)
	anthBody := `{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	delta := namedEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":90}}`)
	billed := 2_000*Money(1000) + 90*Money(2000) // testPrices: the prompt and the output
	for name, pieces := range map[string][]string{
		"no message_start": {anthText("ninety tokens"), delta, anthStop},
		"message_start without usage": {namedEvent("message_start", `{"type":"message_start","message":{"id":"msg","type":"message","role":"assistant","content":[],"model":"m"}}`),
			anthText("ninety tokens"), delta, anthStop},
	} {
		t.Run(name, func(t *testing.T) {
			s := settleStream(t, "/v1/messages", anthBody, pieces...)
			assert.False(t, s.UsageKnown)
			assert.Equal(t, s.Reserved, s.Charged)
			assert.GreaterOrEqual(t, s.Charged, billed)
		})
	}
	for _, usage := range []string{
		`{"output_tokens":90}`,
		`{"completion_tokens":90}`,
		`{"completion_tokens":90,"completion_tokens_details":{"reasoning_tokens":10}}`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ninety tokens"},"finish_reason":"stop"}],"usage":`+usage+`}`)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
		readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"`+prompt+`"}]}`)
		assert.False(t, got.UsageKnown, usage)
		assert.Equal(t, got.Reserved, got.Charged, "%s: the prompt was billed", usage)
	}
}

// A usage that counts its input as zero, or only in the cache (a relay
// that leaves out Anthropic's input_tokens when it is 0), or in its total,
// still says what was billed.
func TestBudgetUsageThatCountsItsInputAnyWayIsKnown(t *testing.T) {
	for _, usage := range []string{
		`{"input_tokens":0,"output_tokens":90}`,
		`{"cache_read_input_tokens":2000,"output_tokens":90}`,
		`{"completion_tokens":90,"total_tokens":2090}`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","type":"message","model":"m","content":[],"usage":`+usage+`}`)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
		readThrough(t, api, b, "/v1/messages", chatBody("m", 100))
		assert.True(t, got.UsageKnown, usage)
		assert.Equal(t, testPrices["m"].Cost(got.Usage), got.Charged, usage)
	}
}

// So is a usage that names no count of the output (prompt_tokens alone):
// the answer's text was billed, and read as zero output tokens. A
// total_tokens counts it (an embedding's usage holds prompt_tokens and
// total_tokens).
func TestBudgetUsageWithoutAnOutputCountIsChargedItsReservation(t *testing.T) {
	for usage, known := range map[string]bool{
		`{"prompt_tokens":20}`:                            false,
		`{"input_tokens":20}`:                             false,
		`{"input_tokens":20,"cache_read_input_tokens":5}`: false,
		`{"prompt_tokens":20,"total_tokens":20}`:          true,
		`{"input_tokens":20,"output_tokens":0}`:           true,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ninety tokens"},"finish_reason":"stop"}],"usage":`+usage+`}`)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
		readThrough(t, api, b, "/v1/chat/completions", chatBody("m", 90))
		assert.Equal(t, known, got.UsageKnown, usage)
		if !known {
			assert.Equal(t, got.Reserved, got.Charged, "%s: the output was billed", usage)
		}
	}
}
