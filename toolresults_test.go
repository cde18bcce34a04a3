package httpguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resultsAPI is an Anthropic-style provider that runs server tools and
// feeds their results to the model as input: each request calls its one
// tool as often as its max_uses allows, each call returning perCall
// tokens (a web_fetch's max_content_tokens when it sets one; no other
// tool has one), and samples
// the model again after each call, billing the results so far again, as
// Anthropic bills search results "on every subsequent iteration", and the
// context before them: the prompt, and the output so far (all of
// max_tokens, at worst, written before the first call). It bills every
// attempt it receives: 10 prompt tokens a sampling, the results and the
// output read again as input, all of max_tokens as output, and searchFee a
// search; its answer reports that usage, with the calls in
// usage.server_tool_use.
type resultsAPI struct {
	*fakeAPI
	billed atomic.Int64 // Money
}

func newResultsAPI(t *testing.T, perCall int64) *resultsAPI {
	api := &resultsAPI{}
	api.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var req struct {
			MaxTokens int64 `json:"max_tokens"`
			Tools     []struct {
				Type             string `json:"type"`
				MaxUses          int64  `json:"max_uses"`
				MaxContentTokens int64  `json:"max_content_tokens"`
			} `json:"tools"`
		}
		if err := json.Unmarshal(body, &req); err != nil || len(req.Tools) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		tool := req.Tools[0]
		size := perCall
		// Anthropic's web_fetch alone reads max_content_tokens.
		if tool.MaxContentTokens > 0 && strings.HasPrefix(tool.Type, "web_fetch") {
			size = tool.MaxContentTokens
		}
		calls := tool.MaxUses
		// The i-th result, billed at the calls+1-i samplings after it; the
		// prompt at each of the calls+1, and the output at each after the first.
		input := 10*(calls+1) + size*calls*(calls+1)/2 + calls*req.MaxTokens
		var searches, fetches int64
		if strings.HasPrefix(tool.Type, "web_search") {
			searches = calls
		} else {
			fetches = calls
		}
		u := Usage{InputTokens: input, OutputTokens: req.MaxTokens}
		api.billed.Add(int64(testPrices["m"].Cost(u) + Money(searches)*searchFee))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","model":"m","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":%d,"output_tokens":%d,"server_tool_use":{"web_search_requests":%d,"web_fetch_requests":%d}}}`,
			input, req.MaxTokens, searches, fetches)
	})
	return api
}

// sendAllWithinLimit sends body 20 times at once through b, and checks
// that what the provider billed is what b charged, within its Limit.
func (api *resultsAPI) sendAllWithinLimit(t *testing.T, b *Budget, body string) {
	refused := api.sendAll(t, b, body, 20)
	billed := Money(api.billed.Load())
	t.Logf("billed %v of a %v Limit; %d of 20 refused", billed, b.Limit(), refused)
	assert.LessOrEqual(t, billed, b.Limit(), "the provider billed %v against a Limit of %v", billed, b.Limit())
	assert.Equal(t, billed, b.Spent(), "charged what the provider billed")
	assert.Less(t, refused, 20, "some fit")
}

// sendAll sends body n times at once through b, reading each answer to
// its end, and returns how many the Budget refused.
func (api *resultsAPI) sendAll(t *testing.T, b *Budget, body string, n int) int {
	client := api.client(t, b)
	var refused atomic.Int64
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
			if errors.Is(err, ErrBudgetExceeded) {
				refused.Add(1)
				return
			}
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return int(refused.Load())
}

// Twenty requests at once, each searching three times: the results, which
// the provider bills as input at each later sampling, cost more than the
// searches. Reserving the searches' fees alone let nine of them through,
// billed $0.81 against a $0.30 Limit; reserving the results too lets three.
func TestBudgetLimitHoldsAgainstSearchResultsBilledAsInput(t *testing.T) {
	api := newResultsAPI(t, DefaultToolResultReserve)
	b := newTestBudget(t, BudgetConfig{Limit: 30 * Cent, ToolPrices: searchPrices})
	body := `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"news?"}],` +
		`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3}]}`
	api.sendAllWithinLimit(t, b, body)
}

// max_content_tokens bounds web_fetch's results alone: Anthropic's
// web_search has no such field, and a server (or a relay) that does not
// refuse it returns whole search results. Reading it on any tool priced
// three searches of 10,000 tokens as three of 1 token, let eight requests
// through, billed $0.72 against a $0.30 Limit.
func TestBudgetLimitHoldsAgainstMaxContentTokensOnASearch(t *testing.T) {
	api := newResultsAPI(t, DefaultToolResultReserve)
	b := newTestBudget(t, BudgetConfig{Limit: 30 * Cent, ToolPrices: searchPrices})
	body := `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"news?"}],` +
		`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3,"max_content_tokens":1}]}`
	api.sendAllWithinLimit(t, b, body)
}

// web_fetch has no fee, and its max_content_tokens bounds what each fetch
// returns: the Budget reserved nothing for it, let all twenty requests
// through, and the pages they fetched were billed $3.00 against a $0.50
// Limit; reserving max_content_tokens a fetch lets three.
func TestBudgetLimitHoldsAgainstFetchedPagesBilledAsInput(t *testing.T) {
	api := newResultsAPI(t, DefaultToolResultReserve)
	b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent})
	body := `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"read it"}],` +
		`"tools":[{"type":"web_fetch_20250910","name":"web_fetch","max_uses":2,"max_content_tokens":50000}]}`
	api.sendAllWithinLimit(t, b, body)
}

// Each sampling after a call reads the prompt and the output so far again:
// a long answer whose tool calls return little is billed mostly for
// those. Reserving the results alone let eleven requests through, billed
// $1.11 against a $0.50 Limit; reserving the context each later sampling
// reads lets four.
func TestBudgetLimitHoldsAgainstTheContextEachSamplingReadsAgain(t *testing.T) {
	api := newResultsAPI(t, DefaultToolResultReserve)
	b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent})
	body := `{"model":"m","max_tokens":20000,"messages":[{"role":"user","content":"summarise it"}],` +
		`"tools":[{"type":"web_fetch_20250910","name":"web_fetch","max_uses":3,"max_content_tokens":100}]}`
	api.sendAllWithinLimit(t, b, body)
}

func TestToolResultTokensBoundWhatTheCallsReturn(t *testing.T) {
	const perCall, callReserve = 1000, 10
	tokens := func(choices, maxToolCalls int64, tools ...serverTool) int64 {
		return toolResultTokens(&serverTools{List: tools, MaxToolCalls: maxToolCalls}, 0, perCall, callReserve, choices)
	}
	search := func(maxUses int64) serverTool { return serverTool{Type: "web_search_20250305", MaxUses: maxUses} }
	fetch := func(maxUses, maxContent int64) serverTool {
		return serverTool{Type: "web_fetch_20250910", MaxUses: maxUses, MaxContentTokens: maxContent}
	}
	assert.Equal(t, int64(1000*(3+2+1)), tokens(1, 0, search(3)), "max_uses: each result billed again at each later call")
	assert.Equal(t, int64(1000*55), tokens(1, 0, search(0)), "ToolCallReserve calls")
	assert.Equal(t, int64(1000*(4+3+2+1)), tokens(1, 4, search(0)), "max_tool_calls")
	assert.Equal(t, int64(1000*(2+1)), tokens(1, 2, search(5)), "max_tool_calls bounds max_uses")
	assert.Equal(t, int64(50_000*2+50_000), tokens(1, 0, fetch(2, 50_000)), "max_content_tokens a call")
	assert.Equal(t, int64(50_000*55), tokens(1, 0, fetch(0, 50_000)), "max_content_tokens, ToolCallReserve calls")
	assert.Equal(t, int64(1000*(3+2+1)), tokens(1, 0, serverTool{Type: "web_search_20250305", MaxUses: 3, MaxContentTokens: 1}),
		"max_content_tokens bounds web_fetch's results alone")
	// The larger results first: a fetch of 50,000 tokens, billed at 3
	// samplings, then two searches of 1,000, billed at 2 and 1.
	assert.Equal(t, int64(50_000*3+1000*(2+1)), tokens(1, 0, search(2), fetch(1, 50_000)))
	assert.Equal(t, int64(50_000*2+1000), tokens(1, 2, search(2), fetch(1, 50_000)), "max_tool_calls keeps the largest")
	assert.Equal(t, int64(2*1000*(3+2+1)), tokens(2, 0, search(3)), "each choice may call")
	assert.Equal(t, int64(1000*(11*12/2)), tokens(1, 0, serverTool{Type: "mcp"}, serverTool{Type: "mcp_toolset"}, search(1)),
		"MCP tools return results too: ten calls of theirs, and the search")
	assert.Equal(t, int64(1000*(5+3+2+1)), tokens(1, 0, serverTool{Type: "plugin_web", MaxUses: 5}, search(3)),
		"a plugin's results are read once, before the model runs")
	assert.Equal(t, int64(1000*10), tokens(1, 0, serverTool{Type: "plugin_file-parser"}), "a plugin without uses: ToolCallReserve")
	assert.Zero(t, tokens(1, 0, serverTool{Type: "bash_20250124"}, serverTool{Type: "text_editor_20250728"}, serverTool{Type: "computer_use_preview"},
		serverTool{Type: "memory_20250818"}, serverTool{Type: "local_shell"}, serverTool{Type: "apply_patch"}, serverTool{Type: "namespace"}),
		"a client tool's result comes in a later request")
	assert.Equal(t, int64(1000*(2+1)), tokens(1, 2, serverTool{Type: "shell", Container: 1}),
		"a hosted shell's results are read again at each later sampling, as code_interpreter's")
	assert.Equal(t, int64(maxUsageTokens), tokens(maxUsageTokens, maxUsageTokens, search(maxUsageTokens), fetch(0, maxUsageTokens)), "saturates")
	assert.Equal(t, int64(maxUsageTokens), tokens(1, 0, search(maxUsageTokens)), "saturates")
	// BudgetConfig.ToolCallReserve may be any count >= 0: the calls in all
	// saturate instead of overflowing (a negative count reserved nothing).
	assert.Equal(t, int64(maxUsageTokens),
		toolResultTokens(&serverTools{List: []serverTool{search(3), search(0)}}, 0, perCall, math.MaxInt64, 1), "saturates")

	// The context each later sampling reads again: once a call.
	withContext := func(context, choices, maxToolCalls int64, tools ...serverTool) int64 {
		return toolResultTokens(&serverTools{List: tools, MaxToolCalls: maxToolCalls}, context, perCall, callReserve, choices)
	}
	assert.Equal(t, int64(500*3+1000*(3+2+1)), withContext(500, 1, 0, search(3)), "max_uses calls")
	assert.Equal(t, int64(500*10+1000*55), withContext(500, 1, 0, search(0)), "ToolCallReserve calls")
	assert.Equal(t, int64(500*2+1000*(2+1)), withContext(500, 1, 2, search(5)), "max_tool_calls calls")
	assert.Equal(t, int64(2*(500*3+1000*(3+2+1))), withContext(500, 2, 0, search(3)), "each choice's")
	assert.Equal(t, int64(1000*5), withContext(500, 1, 0, serverTool{Type: "plugin_web", MaxUses: 5}),
		"a plugin runs before the model, which samples once")
	assert.Zero(t, withContext(500, 1, 0, serverTool{Type: "bash_20250124"}), "a client tool's calls come in later requests")
	assert.Equal(t, int64(maxUsageTokens), withContext(maxUsageTokens, 1, 0, search(2)), "saturates")
}

// The results are input, priced at the request's input price: its dearer
// model's, a long context's past its threshold, and reserved for each of
// its choices.
func TestBudgetReservesToolResultsAtTheInputPrice(t *testing.T) {
	prices := PriceTable{
		"m":    testPrices["m"],
		"dear": {Input: 3 * Dollar, Output: 2 * Dollar},
		"long": {Input: Dollar, Output: 2 * Dollar, LongContext: &LongContextPrice{Above: 20_000, Price: Price{Input: 2 * Dollar, Output: 2 * Dollar}}},
	}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar / 1000, Prices: prices, ToolPrices: searchPrices, ToolResultReserve: 10_000})
	const search = `"tools":[{"type":"web_search_20250305","max_uses":2}]`
	for _, c := range []struct {
		body    string
		input   Money // the price of an input token, per million
		results int64 // a choice's: 10,000 tokens a search, the first billed again after the second
	}{
		{`{"model":"m","max_tokens":1,"messages":[],` + search + `}`, Dollar, 30_000},
		{`{"model":"m","models":["dear"],"max_tokens":1,"messages":[],` + search + `}`, 3 * Dollar, 30_000},
		{`{"model":"long","max_tokens":1,"messages":[],` + search + `}`, 2 * Dollar, 30_000}, // past 20,000 input tokens
		{`{"model":"m","n":2,"max_tokens":1,"messages":[],` + search + `}`, Dollar, 30_000},
	} {
		api := newFakeAPI(t, answerBound)
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(c.body))
		var be *BudgetError
		require.ErrorAs(t, err, &be, c.body)
		// And the samplings after the two searches read the prompt and the
		// output token again.
		results := be.Choices * (c.results + 2*(be.PromptTokens+1))
		assert.Equal(t, results, be.ToolResultTokens, c.body)
		want := Money(be.PromptTokens+results)*c.input/1_000_000 + Money(be.Choices)*2*Dollar/1_000_000 + be.ToolReserve
		assert.Equal(t, want, be.Need, c.body)
		assert.ErrorContains(t, err, fmt.Sprintf("and %d input tokens for what the calls of server tools return", results), c.body)
		assert.ErrorContains(t, err, "lower max_uses / max_content_tokens", c.body)
	}
}

func TestNewBudgetChecksToolResultReserve(t *testing.T) {
	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: testPrices, ToolResultReserve: -1})
	assert.ErrorContains(t, err, "ToolResultReserve")
}

// A background response is charged its reservation alone: a tool with no
// fee whose results the model reads (web_fetch, MCP) needs its calls
// bounded too, as those of a tool with a fee do.
func TestBackgroundResponsesBoundTheCallsOfToolsThatReturnResults(t *testing.T) {
	for _, c := range []struct {
		tools   string
		bounded bool
	}{
		{`"tools":[{"type":"mcp","server_label":"x","server_url":"https://x"}]`, false},
		{`"tools":[{"type":"web_fetch_20250910"}]`, false},
		{`"tools":[{"type":"mcp","server_label":"x","server_url":"https://x"}],"max_tool_calls":3`, true},
		{`"tools":[{"type":"web_fetch_20250910","max_uses":2}]`, true},
		{`"tools":[{"type":"local_shell"},{"type":"computer_use_preview"}]`, true}, // the client runs them
	} {
		cr, err := parseChatRequest([]byte(`{"model":"m","background":true,"max_output_tokens":10,"input":"go",` + c.tools + `}`))
		require.NoError(t, err, c.tools)
		assert.Equal(t, c.bounded, cr.Tools.callsBounded(nil), c.tools)
	}
}

// Anthropic's MCP connector names its servers in mcp_servers, whose tools
// the provider calls without an entry in tools (its first beta): their
// results are reserved as an mcp_toolset's are.
func TestBudgetReservesTheResultsOfMCPServers(t *testing.T) {
	for body, want := range map[string]int64{
		`{"model":"m","max_tokens":1,"messages":[],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}]}`: 1000 * 55,
		`{"model":"m","max_tokens":1,"messages":[],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}],` +
			`"tools":[{"type":"mcp_toolset","mcp_server_name":"x"}]}`: 1000 * 55, // one server's calls, counted once
		`{"model":"m","max_tokens":1,"messages":[],"mcp_servers":[]}`:   0,
		`{"model":"m","max_tokens":1,"messages":[],"mcp_servers":null}`: 0,
	} {
		b := newTestBudget(t, BudgetConfig{Limit: 1, ToolResultReserve: 1000}) // refuses all, to show the need
		api := newFakeAPI(t, answerBound)
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
		var be *BudgetError
		require.ErrorAs(t, err, &be, body)
		if want > 0 { // and the ten samplings after the calls read the prompt and the output token again
			want += 10 * (be.PromptTokens + 1)
		}
		assert.Equal(t, want, be.ToolResultTokens, body)
	}
	_, err := parseChatRequest([]byte(`{"model":"m","MCP_Servers":[{"url":"https://x"}]}`))
	assert.ErrorIs(t, err, errAmbiguousRequest, "a spelling some servers read and others ignore")
}
