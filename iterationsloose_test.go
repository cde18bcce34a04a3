package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A count of an iteration written as a fraction or an exponent (12.0, as
// Python's json.dumps writes a float; 1e3) is read as a top-level count
// written so is: rounded up, the usage not trusted but charged when it
// costs more than the reservation. It made the whole usage malformed, so
// the answer was charged its reservation even when its steps said they
// cost more.
func TestUsageReadsLooseIterationCountsAsLooseTopLevelCounts(t *testing.T) {
	for _, tt := range []struct {
		usage string
		want  Usage
	}{
		{`{"input_tokens":3.0,"output_tokens":1e3}`, Usage{InputTokens: 3, OutputTokens: 1000}},
		{`{"input_tokens":3,"output_tokens":1,"iterations":[{"type":"compaction","input_tokens":15.0,"output_tokens":1e3},{"type":"message","input_tokens":3,"output_tokens":1}]}`,
			Usage{InputTokens: 18, OutputTokens: 1001}},
		{`{"input_tokens":3,"output_tokens":1,"iterations":[{"type":"message","input_tokens":2.5,"output_tokens":1,"cache_read_input_tokens":4E0}]}`,
			Usage{InputTokens: 3 + 4, CachedInputTokens: 4, OutputTokens: 1}},
	} {
		answer := `{"id":"msg_1","type":"message","usage":` + tt.usage + `}`
		for _, r := range []io.Reader{strings.NewReader(answer), iotest.OneByteReader(strings.NewReader(answer))} {
			_, rep := observe(t, "application/json", r)
			assert.False(t, rep.ok, tt.usage)
			assert.Equal(t, tt.want, rep.u, tt.usage)
		}
		stream := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":" + tt.usage + "}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
		_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
		assert.False(t, rep.ok, tt.usage)
		assert.Equal(t, tt.want, rep.u, tt.usage)
	}
}

// The Budget charges such an answer what its steps say, when that is
// more than the reservation: a compaction step's output beyond max_tokens.
func TestBudgetChargesLooseIterationCountsAboveTheReservation(t *testing.T) {
	sonnet := ExamplePrices()["claude-sonnet-4-5"]
	billed := (30*sonnet.Input + 20_100*sonnet.Output) / 1_000_000
	for _, count := range []string{"20000", "20000.0", "2e4"} {
		t.Run(count, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":10,"output_tokens":100,`+
					`"iterations":[{"type":"compaction","input_tokens":20,"output_tokens":`+count+`},{"type":"message","input_tokens":10,"output_tokens":100}]}}`)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-sonnet-4-5": sonnet}, OnSettle: func(s Settlement) { got = s }})
			readThrough(t, api, b, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`)
			require.NotZero(t, got.Charged)
			assert.GreaterOrEqual(t, got.Charged, billed, "charged %v for usage %+v; the provider billed %v", got.Charged, got.Usage, billed)
		})
	}
}
