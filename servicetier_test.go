package httpguard

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An OpenAI answer says which tier ran it: "service_tier" in a chat
// completion, in each chunk of its stream, and in a Responses answer (in a
// stream, in its response object). Only "priority" is billed above
// standard prices.

// tierOf is the tier observeUsage reads in an answer, in reads of every
// size.
func tierOf(t *testing.T, contentType, answer string) tier {
	t.Helper()
	_, whole := observe(t, contentType, strings.NewReader(answer))
	for size := 1; size < len(answer); size++ {
		_, rep := observe(t, contentType, chunked([]byte(answer), size))
		require.Equal(t, whole.u.ranAt, rep.u.ranAt, "%s in reads of %d", answer, size)
	}
	return whole.u.ranAt
}

func TestObserveUsageReadsTheTierAJSONAnswerRanAt(t *testing.T) {
	const usage = `"usage":{"prompt_tokens":3,"completion_tokens":1}`
	for answer, want := range map[string]tier{
		`{"service_tier":"priority",` + usage + `}`:                           tierPriority,
		`{` + usage + `, "service_tier" : "priority" }`:                       tierPriority,
		`{"service_tier":"priorit\u0079",` + usage + `}`:                      tierPriority,
		`{"service_tier":"\u0070\u0072\u0069\u006f\u0072\u0069\u0074\u0079"}`: tierPriority,
		`{"servic\u0065_tier":"priority",` + usage + `}`:                      tierPriority,
		// encoding/json reads a key in another case: the dearer reading.
		`{"Service_Tier":"priority",` + usage + `}`:                 tierPriority,
		`{"ſervice_tier":"priority",` + usage + `}`:                 tierPriority,
		`{"service_tier":"priority","SERVICE_TIER":"default"}`:      tierPriority, // an exact decoder reads priority
		`{"service_tier":"default","SERVICE_TIER":"priority"}`:      tierPriority, // encoding/json does
		`{"service_tier":"priority","service_tier":null}`:           tierPriority, // encoding/json keeps it
		`{"service_tier":"priority","service_tier":1}`:              tierPriority,
		`{"service_tier":"default","service_tier":"priority"}`:      tierPriority,
		`{"service_tier":"priority",` + usage + `,"usage":{"x":1}}`: tierPriority, // usage spoilt, tier read
		// A later value replaces an earlier one in every decoder.
		`{"service_tier":"priority","service_tier":"default"}`: tierStandard,
		`{"service_tier":"default",` + usage + `}`:             tierStandard,
		`{"service_tier":"flex"}`:                              tierStandard,
		`{"service_tier":"scale"}`:                             tierStandard,
		`{"service_tier":"auto"}`:                              tierStandard,
		`{"service_tier":"Priority"}`:                          tierStandard,
		`{"service_tier":"priority "}`:                         tierStandard,
		`{"service_tier":["priority"]}`:                        tierStandard,
		`{"service_tier":null}`:                                tierStandard,
		`{"service_tier ":"priority"}`:                         tierStandard,
		`{"tier":"priority","x":{"service_tier":"priority"}}`:  tierStandard, // not top-level
		`{"choices":[{"service_tier":"priority"}]}`:            tierStandard,
		`{"x":"\"service_tier\":\"priority\""}`:                tierStandard,
		`{"service_tier":"` + strings.Repeat("p", 100) + `"}`:  tierStandard,
	} {
		assert.Equal(t, want, tierOf(t, "application/json", answer), answer)
	}
}

// A string too long to be "priority" that replaces one: encoding/json
// reads it, and the scanner, which does not keep it, keeps the dearer
// reading.
func TestObserveUsageKeepsPriorityPastALongServiceTier(t *testing.T) {
	answer := `{"SERVICE_TIER":"priority","Service_Tier":"` + strings.Repeat("x", 2*maxTierValue) + `"}`
	_, rep := observe(t, "application/json", chunked([]byte(answer), 40))
	assert.Equal(t, tierPriority, rep.u.ranAt)
}

func TestObserveUsageReadsTheTierAStreamRanAt(t *testing.T) {
	chunk := func(tier string) string {
		return `data: {"id":"c","object":"chat.completion.chunk",` + tier + `"choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}` + "\n\n"
	}
	usage := `data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}` + "\n\ndata: [DONE]\n\n"
	p, d := chunk(`"service_tier":"priority",`), chunk(`"service_tier":"default",`)
	for stream, want := range map[string]tier{
		p + p + p + usage: tierPriority,
		d + d + p + usage: tierPriority, // a line that says Priority is enough
		p + d + d + usage: tierPriority,
		chunk(`"Service_tier":"priority",`) + usage:                       tierPriority,
		chunk(`"service_tier":"priorit\u0079",`) + usage:                  tierPriority,
		chunk(`"service_tier":"priority","service_tier":"auto",`) + usage: tierStandard,
		p + "data: {\"error\":{\"message\":\"overloaded\"}}\n\n":          tierPriority, // an error: usage not ok, tier read
		d + d + d + usage: tierStandard,
		chunk(`"x":{"service_tier":"priority"},`) + usage: tierStandard,
		usage + p:       tierStandard, // after [DONE]: not read
		openAIStream:    tierStandard,
		responsesStream: tierStandard,
		strings.Replace(responsesStream, `"status":"completed",`, `"status":"completed","service_tier":"priority",`, 1):     tierPriority,
		strings.Replace(responsesStream, `"status":"in_progress",`, `"status":"in_progress","service_tier":"priority",`, 1): tierPriority,
		// The tier of a response object is its own.
		strings.Replace(responsesStream, `"type":"response.completed",`, `"type":"response.completed","x":{"service_tier":"priority"},`, 1): tierStandard,
	} {
		assert.Equal(t, want, tierOf(t, "text/event-stream", stream), stream)
	}
}

// Repeated lines are recognised without being lexed (see lineTemplate): a
// line that says Priority after lines that did not is still read.
func TestSSEScannerReadsAPriorityLineAfterRepeatedOnes(t *testing.T) {
	line := func(tier, text string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","service_tier":"` + tier + `","choices":[{"index":0,"delta":{"content":"` + text + `"}}],"usage":null}` + "\n\n"
	}
	var sb strings.Builder
	for i := range 50 {
		sb.WriteString(line("default", fmt.Sprint("t", i)))
	}
	sb.WriteString(line("priority", "last") + "data: [DONE]\n\n")
	for _, lexAll := range []bool{false, true} {
		r := readSSE([]byte(sb.String()), []int{300, 7, 4096}, lexAll)
		assert.Equal(t, tierPriority, r.u.ranAt, "lexAll %v", lexAll)
	}
}

// The top-level keys read from answers are kept, when they span reads,
// even written with \u escapes; so is the longest "priority".
func TestEveryAnswerKeyFitsTheLexersKeyBufferEvenEscaped(t *testing.T) {
	for _, k := range answerKeys {
		assert.LessOrEqual(t, len(`\u0000`)*len(k), maxLexedKey, k)
	}
	assert.LessOrEqual(t, len(`"\u0070\u0072\u0069\u006f\u0072\u0069\u0074\u0079"`), maxTierValue)
}
