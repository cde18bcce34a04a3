package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A count written as a number that is not a plain integer (50000.0, as
// Python's json.dumps writes a float; 5e4) is read by decoders that take
// any number: openai-python's models keep it, JavaScript's JSON.parse
// reads 50000. It spoilt the usage, and the answer was charged its
// reservation however much the count said. It is now read, not trusted,
// as a usage decoders read differently: the count rounded up, charged when
// that costs more than the reservation.
func TestBudgetChargesAUsageCountWrittenAsAFractionOrExponent(t *testing.T) {
	const chat, chatBody = "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	for name, tc := range map[string]struct{ contentType, answer string }{
		"json, 50000.0":    {"application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":50000.0,"total_tokens":50020.0}}`},
		"json, 5e4":        {"application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5e4}}`},
		"json, 49999.5":    {"application/json", `{"choices":[],"usage":{"prompt_tokens":2E1,"completion_tokens":49999.5}}`},
		"stream, 50000.0":  {"text/event-stream", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":50000.0}}\n\ndata: [DONE]\n\n"},
		"stream, 5.0E+4":   {"text/event-stream", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5.0E+4}}\n\ndata: [DONE]\n\n"},
		"json, in details": {"application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":5e4}}}`},
	} {
		t.Run(name, func(t *testing.T) {
			got := settleAnswer(t, chat, chatBody, tc.contentType, tc.answer)
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000})
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "a count no integer decoder reads")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; the count reads as usage costing %v", got.Charged, got.Reserved, billed)
		})
	}
}

func TestUsageReadsALooseCountRoundedUpAndNotOK(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want int64
	}{
		{"50000.0", 50000}, {"5e4", 50000}, {"5.0E+4", 50000}, {"49999.5", 50000}, {"0.1", 1}, {"-0.0", 0}, {"1e-7", 1},
	} {
		var r usageReadings
		r.add([]byte(`{"prompt_tokens":1,"completion_tokens":` + tt.v + `}`))
		_, ok := r.get()
		assert.False(t, ok, tt.v)
		w, ok := r.dearest()
		require.True(t, ok, tt.v)
		assert.Equal(t, tt.want, w.get(completionTokens), tt.v)
	}
	for _, v := range []string{"-1.5", "1e10", "1e400", "12345678901234567890"} {
		var r usageReadings
		r.add([]byte(`{"prompt_tokens":1,"completion_tokens":` + v + `}`))
		w, ok := r.dearest()
		assert.False(t, ok && w.inRange(), "%s lies", v)
	}
}
