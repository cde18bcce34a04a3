package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A usage value longer than maxUsageValue (a relay that pads it with a
// long member no count reads) is read by every SDK, whose decoders have no
// such bound. It spoilt the usage, and the answer was charged its
// reservation however much its counts said. Its counts are read as the
// value passes, whatever its length: it is now not trusted, but charged
// when its counts cost more than the reservation.
func TestBudgetChargesAnOversizedUsageValueWhenItCostsMore(t *testing.T) {
	const chat, chatBody = "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	pad := `"x":"` + strings.Repeat("a", maxUsageValue) + `"`
	for name, tc := range map[string]struct{ contentType, answer string }{
		"json":               {"application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":50000,` + pad + `}}`},
		"json, padded first": {"application/json", `{"choices":[],"usage":{` + pad + `,"prompt_tokens":20,"completion_tokens":50000}}`},
		"stream":             {"text/event-stream", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":50000," + pad + "}}\n\ndata: [DONE]\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			got := settleAnswer(t, chat, chatBody, tc.contentType, tc.answer)
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000})
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "an oversized usage")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; the usage reads as costing %v", got.Charged, got.Reserved, billed)
		})
	}
}
