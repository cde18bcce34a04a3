package httpguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Anthropic's server-side compaction (beta header compact-2026-01-12,
// "context_management": {"edits": [{"type": "compact_20260112"}]}) runs an
// extra sampling step that summarises the conversation. Its answer's usage
// says (platform.claude.com/docs/en/build-with-claude/compaction,
// "Understanding usage"):
//
//	"The top-level input_tokens and output_tokens do not include compaction
//	iteration usage—they reflect the sum of all non-compaction iterations.
//	To calculate total tokens consumed and billed for a request, sum across
//	all entries in the usage.iterations array."
//
// Charged the top-level counts alone, the compaction iteration the
// provider bills would never be charged, and the Limit would be passed
// although every count the provider bills is in the answer: the Budget
// charges the sum over the iterations.

// compactionBody is an Anthropic Messages body that enables compaction,
// with a conversation of about contentBytes bytes.
func compactionBody(contentBytes int) string {
	return `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"` +
		strings.Repeat("lorem ipsum dolor sit amet ", contentBytes/27) +
		`"}],"context_management":{"edits":[{"type":"compact_20260112","trigger":{"type":"input_tokens","value":50000}}]}}`
}

// The iterations of one compacted answer: the compaction step read the
// whole conversation (15,000 tokens, well within the body's bytes) and wrote
// a 2,500-token summary; the message step read the summary and the new turn.
const (
	compactIn, compactOut = 15_000, 2_500
	messageIn, messageOut = 3_000, 1_000
)

var compactionUsage = fmt.Sprintf(`{"input_tokens":%d,"output_tokens":%d,"iterations":[`+
	`{"type":"compaction","input_tokens":%d,"output_tokens":%d},`+
	`{"type":"message","input_tokens":%d,"output_tokens":%d}]}`,
	messageIn, messageOut, compactIn, compactOut, messageIn, messageOut)

// billedCompaction is what Anthropic bills for one such answer at
// testPrices: the sum over the iterations.
var billedCompaction = testPrices["m"].Cost(Usage{InputTokens: compactIn + messageIn, OutputTokens: compactOut + messageOut})

func TestBudgetChargesCompactionIterations(t *testing.T) {
	body := compactionBody(60_000)
	for name, tc := range map[string]struct{ contentType, answer string }{
		"json": {"application/json", `{"id":"msg_1","type":"message","role":"assistant","model":"m",` +
			`"content":[{"type":"compaction","content":"Summary of the conversation: ..."},{"type":"text","text":"Based on our conversation..."}],` +
			`"stop_reason":"end_turn","usage":` + compactionUsage + `}`},
		"stream": {"text/event-stream",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":" + fmt.Sprint(messageIn) + ",\"output_tokens\":1}}}\n\n" +
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"compaction\",\"content\":\"\"}}\n\n" +
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"compaction_delta\",\"content\":\"Summary...\"}}\n\n" +
				"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":" + compactionUsage + "}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			b := body
			if name == "stream" {
				b = strings.Replace(body, `"max_tokens":1000,`, `"max_tokens":1000,"stream":true,`, 1)
			}
			got := settleAnswer(t, "/v1/messages", b, tc.contentType, tc.answer)
			t.Logf("reserved %v, billed %v, charged %v", got.Reserved, billedCompaction, got.Charged)
			assert.GreaterOrEqual(t, got.Charged, billedCompaction,
				"the provider bills the compaction iteration (%d in, %d out) the answer reports in usage.iterations; the Budget charged %v for %+v",
				compactIn, compactOut, got.Charged, got.Usage)
		})
	}
}

// TestBudgetLimitHoldsUnderCompaction sends compacting requests
// until the Budget refuses one, to a server that bills what Anthropic
// bills (the sum over the iterations): what it billed stays within the
// Limit (charged the top-level counts alone, 188 requests went through,
// billed $4.70 under a $1 Limit).
func TestBudgetLimitHoldsUnderCompaction(t *testing.T) {
	var billed Money
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		billed += billedCompaction // one handler at a time: requests are sent in turn
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":`+compactionUsage+`}`)
	})
	const limit = Dollar
	b := newTestBudget(t, BudgetConfig{Limit: limit, OutputReserve: 100})
	client := api.client(t, b)
	body := compactionBody(60_000)
	sent := 0
	for ; sent < 10_000; sent++ {
		resp, err := client.Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			require.True(t, errors.Is(err, ErrBudgetExceeded), "%v", err)
			break
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t.Logf("limit %v; %d requests sent; provider billed %v", limit, sent, billed)
	assert.LessOrEqual(t, billed, limit, "the provider billed %v under a Limit of %v", billed, limit)
	assert.Greater(t, sent, 10, "the Limit holds room for dozens of such requests")
}

// Perplexity's Sonar API (api.perplexity.ai/chat/completions, OpenAI's
// chat format) bills sonar-deep-research's reasoning tokens ($3 per
// million) and citation tokens ($2 per million) besides prompt and
// completion tokens, and reports them at the top of usage, outside
// completion_tokens and total_tokens. The usage below is the example of
// Perplexity's docs (total_cost $0.816: output $0.091, citations $0.038,
// reasoning $0.582, 21 searches $0.105). Read as prompt and completion
// tokens alone, it was charged $0.091, below its reservation of
// max_tokens 12,000 too, as reasoning tokens are not bounded by
// max_tokens; citations are now charged as input, reasoning as output.
func TestBudgetChargesPerplexityReasoningAndCitationTokens(t *testing.T) {
	const usage = `{"prompt_tokens":33,"completion_tokens":11395,"total_tokens":11428,"citation_tokens":19028,"num_search_queries":21,"reasoning_tokens":193947,` +
		`"cost":{"input_tokens_cost":0.0,"output_tokens_cost":0.091,"citation_tokens_cost":0.038,"reasoning_tokens_cost":0.582,"search_queries_cost":0.105,"total_cost":0.816}}`
	answer := `{"id":"x","model":"sonar-deep-research","created":1756488074,"object":"chat.completion","usage":` + usage +
		`,"citations":["https://example.com"],"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"report"}}]}`
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s },
		Prices: PriceTable{"sonar-deep-research": {Input: 2 * Dollar, Output: 8 * Dollar}}})
	readThrough(t, api, b, "/chat/completions",
		`{"model":"sonar-deep-research","max_tokens":12000,"messages":[{"role":"user","content":"Analyse the quantum computing industry."}]}`)
	// The tokens alone, at Perplexity's prices, searches left out (a
	// Price.Request could cover those).
	billedTokens := Money(33*2+11395*8+19028*2+193947*3) * Dollar / 1_000_000
	t.Logf("reserved %v, billed for tokens %v (Perplexity's total_cost $0.816), charged %v", got.Reserved, billedTokens, got.Charged)
	assert.GreaterOrEqual(t, got.Charged, billedTokens, "reasoning_tokens and citation_tokens are billed: they must be charged")
}

// sonar-deep-research bills each search it runs ($5 per 1,000 queries),
// counted in usage.num_search_queries. They are charged as web searches,
// at ToolPrices' fee of a web search, though the request declares no
// tool: 21 searches, $0.105 of the example's $0.816. A usage that counts
// Anthropic's web_search_requests too is read by those, not both.
func TestBudgetChargesPerplexitySearchesAsWebSearches(t *testing.T) {
	for _, c := range []struct {
		usage    string
		searches int64
	}{
		{`{"prompt_tokens":33,"completion_tokens":100,"total_tokens":133,"num_search_queries":21}`, 21},
		{`{"prompt_tokens":33,"completion_tokens":100,"total_tokens":133,"num_search_queries":21,"server_tool_use":{"web_search_requests":2}}`, 2},
		{`{"prompt_tokens":33,"completion_tokens":100,"total_tokens":133,"num_search_queries":0}`, 0},
		{`{"prompt_tokens":33,"completion_tokens":100,"total_tokens":133}`, 0},
	} {
		answer := `{"id":"x","model":"sonar-deep-research","object":"chat.completion","usage":` + c.usage +
			`,"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"report"}}]}`
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, answer)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OnSettle: func(s Settlement) { got = s },
			Prices:     PriceTable{"sonar-deep-research": {Input: 2 * Dollar, Output: 8 * Dollar}},
			ToolPrices: map[string]Money{"web_search": 5 * Cent / 10}})
		readThrough(t, api, b, "/chat/completions",
			`{"model":"sonar-deep-research","max_tokens":1000,"messages":[{"role":"user","content":"Analyse the quantum computing industry."}]}`)
		tokens := Money(33*2+100*8) * Dollar / 1_000_000
		assert.Equal(t, tokens+Money(c.searches)*5*Cent/10, got.Charged, c.usage)
	}
}

// Anthropic's advisor tool (advisor-tool-2026-03-01: {"type":
// "advisor_20260301", "name": "advisor", "model": "claude-opus-4-6"})
// runs a sub-inference on the advisor model inside the request, over the
// whole transcript, billed at the advisor model's rates. Its tokens are an
// "advisor_message" entry of usage.iterations, naming its model, and are
// not in the top-level counts (which sum the "message" iterations). Its
// call has no fee, so a Budget that prices it at 0 in ToolPrices (the only
// way to let it through) reserves ToolResultReserve input tokens at the
// executor's price for its advice. The Budget cannot price another
// model's step from usage, so such a usage is unreadable: the answer is
// charged its reservation, which here covers the bill.
func TestBudgetChargesAdvisorIterationsTheirReservation(t *testing.T) {
	const usage = `{"input_tokens":40,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"output_tokens":900,` +
		`"iterations":[{"type":"message","input_tokens":20,"output_tokens":300},` +
		`{"type":"advisor_message","model":"opus","input_tokens":60000,"output_tokens":1700},` +
		`{"type":"message","input_tokens":20,"output_tokens":600}]}`
	answer := `{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[` +
		`{"type":"server_tool_use","id":"srvtoolu_1","name":"advisor","input":{}},` +
		`{"type":"advisor_tool_result","tool_use_id":"srvtoolu_1","content":{"type":"advisor_result","text":"plan"}},` +
		`{"type":"text","text":"done"}],"stop_reason":"end_turn","usage":` + usage + `}`
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	prices := PriceTable{"m": {Input: Dollar, Output: 5 * Dollar}, "opus": {Input: 5 * Dollar, Output: 25 * Dollar}}
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s },
		Prices: prices, ToolPrices: map[string]Money{"advisor": 0}})
	readThrough(t, api, b, "/v1/messages",
		`{"model":"m","max_tokens":1000,"tools":[{"type":"advisor_20260301","name":"advisor","model":"opus"}],"messages":[{"role":"user","content":"Build a worker pool."}]}`)
	billed := prices["m"].Cost(Usage{InputTokens: 40, OutputTokens: 900}) + prices["opus"].Cost(Usage{InputTokens: 60_000, OutputTokens: 1700})
	t.Logf("reserved %v, billed %v, charged %v", got.Reserved, billed, got.Charged)
	assert.GreaterOrEqual(t, got.Charged, billed, "the advisor_message iteration, billed at the advisor's rates, is not charged")
}

// TestReadIterations reads usage.iterations as decoders do, or refuses
// it: the sums of the counts of message and compaction steps; any other
// step, a count not a non-negative number, or a key in another case is
// malformed; a count that is a number but not an integer is read loosely.
func TestReadIterations(t *testing.T) {
	for _, tt := range []struct {
		v          string
		want       [4]int64
		bad, loose bool
	}{
		{v: `[]`},
		{v: `[{"type":"message","input_tokens":3,"output_tokens":4}]`, want: [4]int64{3, 4, 0, 0}},
		{v: `[{"type":"compaction","input_tokens":10,"output_tokens":2,"cache_read_input_tokens":5,"cache_creation_input_tokens":6},` +
			`{"type":"message","input_tokens":1,"output_tokens":1,"cache_read_input_tokens":null}]`, want: [4]int64{11, 3, 5, 6}},
		{v: `[{"type":"message","input_tokens":1,"input_tokens":9}]`, want: [4]int64{9, 0, 0, 0}}, // the last wins
		{v: `[{"\u0074ype":"message","\u0069nput_tokens":2}]`, want: [4]int64{2, 0, 0, 0}},        // escaped keys
		{v: `[{"type":"message","input_tokens":1,"other":[1,2]}]`, want: [4]int64{1, 0, 0, 0}},    // unknown keys
		{v: `[{"type":"message","input_tokens":999999999},{"type":"message","input_tokens":999999999}]`, want: [4]int64{maxUsageTokens + 1, 0, 0, 0}},
		{v: `[{"type":"advisor_message","model":"opus","input_tokens":60000}]`, bad: true}, // another model's prices
		{v: `[{"type":"Message","input_tokens":1}]`, bad: true},
		{v: `[{"input_tokens":1}]`, bad: true}, // a step of no known type
		{v: `[{"type":"message","Input_tokens":1}]`, bad: true},
		{v: `[{"TYPE":"message","input_tokens":1}]`, bad: true},
		{v: `[{"type":"message","input_tokens":-1}]`, bad: true},
		{v: `[{"type":"message","input_tokens":1.5}]`, want: [4]int64{2, 0, 0, 0}, loose: true}, // read as a top-level count: rounded up
		{v: `[{"type":"message","input_tokens":1e3,"output_tokens":12.0}]`, want: [4]int64{1000, 12, 0, 0}, loose: true},
		{v: `[{"type":"message","input_tokens":1e10}]`, want: [4]int64{maxUsageTokens + 1, 0, 0, 0}, loose: true},
		{v: `[{"type":"message","input_tokens":-1.5}]`, bad: true},
		{v: `[{"type":"message","input_tokens":"1"}]`, bad: true},
		{v: `[null]`, bad: true},
		{v: `[1]`, bad: true},
		{v: `{"type":"message"}`, bad: true},
		{v: `7`, bad: true},
	} {
		got, loose, err := readIterations([]byte(tt.v))
		if tt.bad {
			assert.Error(t, err, tt.v)
			continue
		}
		if assert.NoError(t, err, tt.v) {
			assert.Equal(t, tt.want, got, tt.v)
			assert.Equal(t, tt.loose, loose, tt.v)
		}
	}
}

// TestUsageReadsIterations reads an Anthropic usage whose iterations
// count steps its top-level counts leave out: each count is the larger of
// the two, cache writes the iterations add are priced as one-hour writes,
// a repeated iterations array replaces the one before, and a null after
// one is read as decoders read it (encoding/json keeps it, others drop
// it: the dearer reading is charged).
func TestUsageReadsIterations(t *testing.T) {
	for _, tt := range []struct {
		usage string
		want  Usage
		ok    bool
	}{
		{`{"input_tokens":3,"output_tokens":1,"iterations":[{"type":"compaction","input_tokens":15,"output_tokens":2},{"type":"message","input_tokens":3,"output_tokens":1}]}`,
			Usage{InputTokens: 18, OutputTokens: 3}, true},
		{`{"input_tokens":3,"output_tokens":1,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,` +
			`"iterations":[{"type":"compaction","input_tokens":15,"output_tokens":2,"cache_read_input_tokens":1,"cache_creation_input_tokens":7}]}`,
			Usage{InputTokens: 15 + 4 + 7, CachedInputTokens: 4, CacheWriteInputTokens: 7, CacheWrite1hInputTokens: 5, OutputTokens: 2}, true},
		{`{"input_tokens":3,"output_tokens":1,"iterations":[{"type":"compaction","input_tokens":15,"output_tokens":2}],"iterations":[{"type":"message","input_tokens":3,"output_tokens":1}]}`,
			Usage{InputTokens: 3, OutputTokens: 1}, true},
		{`{"input_tokens":3,"output_tokens":1,"iterations":[{"type":"advisor_message","input_tokens":15,"output_tokens":2}]}`, Usage{}, false},
	} {
		answer := `{"id":"msg_1","type":"message","usage":` + tt.usage + `}`
		for _, r := range []io.Reader{strings.NewReader(answer), iotest.OneByteReader(strings.NewReader(answer))} {
			_, rep := observe(t, "application/json", r)
			assert.Equal(t, tt.ok, rep.ok, tt.usage)
			if tt.ok {
				assert.Equal(t, tt.want, rep.u, tt.usage)
			}
		}
	}
}

// foldTotal raises completion_tokens to the output the total implies,
// less the reasoning tokens Perplexity counts apart (which usage adds to
// completion_tokens again): otherwise the fold read as more output than
// before, was dropped, and a reading mixed with another could cost less
// than this one alone.
func TestFoldTotalLeavesPerplexitysReasoningApart(t *testing.T) {
	var w wireUsage
	w.put(promptTokens, 10)
	w.put(completionTokens, 10)
	w.put(reasoningTokens, 5)
	w.put(totalTokens, 100)
	before, ok := w.usage()
	require.True(t, ok)
	require.Equal(t, Usage{InputTokens: 10, OutputTokens: 90}, before)
	w.foldTotal()
	assert.Equal(t, int64(85), w.get(completionTokens), "the total's extra tokens folded in")
	after, ok := w.usage()
	require.True(t, ok)
	assert.Equal(t, before, after)
}

// FuzzReadIterations reads any value without panicking, accepts only a
// JSON array of objects, and sums within [0, maxUsageTokens+1].
func FuzzReadIterations(f *testing.F) {
	for _, v := range []string{`[]`, `[{"type":"message","input_tokens":3}]`, `[{"type":"compaction","input_tokens":1,"output_tokens":2,"cache_read_input_tokens":3,"cache_creation_input_tokens":4}]`,
		`[{"type":"advisor_message"}]`, `[null]`, `{}`, `[{"type":"message","Input_tokens":1}]`} {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		sums, _, err := readIterations(v)
		if err != nil {
			return
		}
		var steps []map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(v, &steps), "%q", v)
		for _, n := range sums {
			require.True(t, n >= 0 && n <= maxUsageTokens+1, "%q: %v", v, sums)
		}
	})
}
