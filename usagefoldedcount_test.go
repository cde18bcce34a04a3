package httpguard

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encoding/json matches keys case-insensitively (and by Unicode's simple
// folding: "\u212a", the Kelvin sign, is a "k"), so the SDKs that decode
// with it (go-openai) read a count under a key in another case as that
// count, which other decoders skip. Such a count spoilt the usage: the
// answer was charged its reservation, however much the count said. It is
// now read as a usage decoders read differently is: not trusted, but
// charged its dearer reading when that costs more than the reservation.
func TestBudgetChargesAUsageCountKeyInAnotherCase(t *testing.T) {
	const chat, chatBody = "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	for name, tc := range map[string]struct{ path, body, contentType, answer string }{
		"json":              {chat, chatBody, "application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"Completion_Tokens":50000}}`},
		"json, kelvin sign": {chat, chatBody, "application/json", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"completion_to\u212aens":50000}}`},
		"json, upper case, escaped": {chat, chatBody, "application/json",
			`{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"COMPLETION\u005fTOKENS":50000}}`},
		"json, details object": {chat, chatBody, "application/json",
			`{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"Completion_Tokens_Details":{"reasoning_tokens":50000}}}`},
		"json, details count": {chat, chatBody, "application/json",
			`{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"completion_tokens_details":{"Reasoning_Tokens":50000}}}`},
		"stream": {chat, chatBody, "text/event-stream",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5,\"Completion_Tokens\":50000}}\n\ndata: [DONE]\n\n"},
		"anthropic message_delta": {"/v1/messages", `{"model":"m","max_tokens":100,"stream":true,"messages":[]}`, "text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5,\"Input_Tokens\":90000}}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			got := settleAnswer(t, tc.path, tc.body, tc.contentType, tc.answer)
			billed := testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000})
			if tc.path == "/v1/messages" {
				billed = testPrices["m"].Cost(Usage{InputTokens: 90_000, OutputTokens: 5})
			}
			require.Greater(t, billed, got.Reserved, "the usage reported costs more than the reservation")
			assert.False(t, got.UsageKnown, "a usage decoders read differently")
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v, reserved %v; encoding/json reads usage costing %v", got.Charged, got.Reserved, billed)
		})
	}
}

// A count in another case reads into encoding/json's reading alone, in
// each of the usage readers: whole, lexed in pieces, or decoded.
func TestUsageReadsACountKeyInAnotherCaseAsEncodingJSON(t *testing.T) {
	for _, v := range []string{
		`{"prompt_tokens":20,"completion_tokens":5,"Completion_Tokens":50000}`,
		`{"Completion_Tokens":50000,"prompt_tokens":20,"completion_tokens":5}`,
		`{"prompt_tokens":20,"completion_tokens":5,"Completion_Tokens":null}`,
		`{"prompt_tokens":20,"completion_tokens":5,"completion_tokens_details":{"Reasoning_Tokens":50000}}`,
		`{"prompt_tokens":20,"completion_tokens":5,"Completion_Tokens_Details":{"reasoning_tokens":50000,"Audio_Tokens":3}}`,
		`{"prompt_tokens":20,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":10},"Prompt_Tokens_Details":{"cached_tokens":0}}`,
	} {
		gw, gok := goUsageReading([]byte(v))
		xw, xok := exactUsageReading([]byte(v))
		require.True(t, gok && xok, v)
		for _, cut := range []int{0, 1, len(v) / 2, len(v) - 1} {
			var r usageReadings
			var val usageValue
			val.start(&r, exactMatch)
			if cut == 0 {
				r = usageReadings{}
				r.add([]byte(v))
			} else {
				_, ok := val.read([]byte(v[:cut]))
				require.True(t, ok)
				_, ok = val.read([]byte(v[cut:]))
				require.True(t, ok)
			}
			require.False(t, r.bad, "%s cut at %d", v, cut)
			assert.Equal(t, gw, r.merged, "encoding/json's reading of %s, cut at %d", v, cut)
			last := r.merged
			if r.split {
				last = r.last
			}
			assert.Equal(t, xw, last, "an exact decoder's reading of %s, cut at %d", v, cut)
		}
	}
}
