package httpguard

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tokens a usage's total_tokens counts beyond its input and output
// are read as output. A usage two decoders read differently (a repeated
// "usage", one in another case), or a stream whose usage lines were
// merged, was charged the larger of each count of the readings: the
// larger input of one then hid the total's extra tokens of the other,
// read at the output price, and the charge came to less than the reading
// an SDK takes. Against a server that bills that reading, under a Limit
// it must hold: answers whose readings differ, the output price twice
// the input's.
func TestBudgetChargesNoLessThanAReadingWhoseTotalCountsBeyondItsInput(t *testing.T) {
	// The reading billed: 10 input tokens, 999,990 output (the total's).
	billedUsage := Usage{InputTokens: 10, OutputTokens: 999_990}
	for name, tc := range map[string]struct {
		contentType, answer string
		billed              *Usage // nil: billedUsage
	}{
		// encoding/json merges the second object into the first; others
		// read the second alone: no input, a million output tokens.
		"json, usage repeated": {"application/json", `{"id":"c","model":"m","usage":{"prompt_tokens":899990,"completion_tokens":0},` +
			`"usage":{"completion_tokens":10,"total_tokens":1000000}}`, nil},
		// As Anthropic's format, whose output_tokens the total's extra
		// tokens go to: 900,000 tokens read from the cache in one reading.
		"json, usage repeated, output_tokens": {"application/json", `{"id":"c","model":"m","usage":{"cache_read_input_tokens":900000,"total_tokens":20},` +
			`"usage":{"total_tokens":800000,"output_tokens":10}}`, &Usage{OutputTokens: 800_000}},
		"json, usage in another case": {"application/json", `{"id":"c","model":"m","usage":{"prompt_tokens":10,"completion_tokens":0,"total_tokens":1000000},` +
			`"Usage":{"prompt_tokens":900000}}`, nil},
		"stream, usage lines": {"text/event-stream", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":900000,\"completion_tokens\":0,\"total_tokens\":900000}}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":0,\"total_tokens\":1000000}}\n\ndata: [DONE]\n\n", nil},
	} {
		t.Run(name, func(t *testing.T) {
			bill := billedUsage
			if tc.billed != nil {
				bill = *tc.billed
			}
			var billed atomic.Int64
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				billed.Add(int64(testPrices["m"].Cost(bill)))
				w.Header().Set("Content-Type", tc.contentType)
				io.WriteString(w, tc.answer)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 250 * Cent, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","max_tokens":10,"stream":true,"stream_options":{"include_usage":true},"messages":[]}`)
			settled, _, err := b.Totals(context.Background())
			require.NoError(t, err)
			require.Greater(t, Money(billed.Load()), got.Reserved)
			assert.GreaterOrEqual(t, settled, Money(billed.Load()), "charged %v (usage %+v); the server billed %v", got.Charged, got.Usage, Money(billed.Load()))
		})
	}
}

// A stream's model is the one the last data line that names one says
// served it. A line that repeats the last inert line (the template) is
// not lexed, so a model it named was not read again: after a line naming
// another model (one that is not inert, as a line with usage), the stream
// was priced at that other model, though its last lines named the
// template's. Against a server that bills the model its last lines name.
func TestBudgetPricesAStreamAtTheModelItsLastLinesNameWhenTheyRepeatTheTemplate(t *testing.T) {
	prices := PriceTable{"cheap": {Input: Dollar, Output: 2 * Dollar}, "dear": {Input: 10 * Dollar, Output: 40 * Dollar}}
	usage := Usage{InputTokens: 1000, OutputTokens: 20_000}
	dear := "data: {\"id\":\"c\",\"model\":\"dear\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n"
	stream := dear + dear +
		"data: {\"id\":\"c\",\"model\":\"cheap\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"y\"}}],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":20000}}\n\n" +
		dear + dear + "data: [DONE]\n\n"
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		billed.Add(int64(prices["dear"].Cost(usage)))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, stream)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/chat/completions", `{"model":"cheap","max_tokens":10,"stream":true,"stream_options":{"include_usage":true},"messages":[]}`)
	settled, _, err := b.Totals(context.Background())
	require.NoError(t, err)
	require.Greater(t, Money(billed.Load()), got.Reserved)
	assert.GreaterOrEqual(t, settled, Money(billed.Load()), "charged %v as %q; the server billed %v", got.Charged, got.PricedAs, Money(billed.Load()))
}
