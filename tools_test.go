package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// searchFee is what Anthropic and OpenAI bill a web search: $10 per 1,000.
const searchFee = Cent

var searchPrices = map[string]Money{"web_search": searchFee}

// searchingAPI is a provider that runs web searches and bills them: each
// request searches appetite times, or as often as its tools allow
// (max_uses, max_tool_calls) when that is fewer, and is billed its 10
// prompt and 5 completion tokens at testPrices plus searchFee a search.
// Its answers count the searches in usage.server_tool_use (Anthropic's
// format, also streamed), list them in their output (OpenAI Responses'
// format, also streamed), or, as OpenAI's chat completions do, say nothing
// of them.
type searchingAPI struct {
	*fakeAPI
	billed atomic.Int64 // Money
}

// searchingAnswer is the format a searchingAPI answers in.
type searchingAnswer int

const (
	searchesCounted      searchingAnswer = iota // usage.server_tool_use counts the searches
	searchesStreamed                            // message_delta's usage counts them
	searchesListed                              // the output lists a web_search_call item for each
	searchesListedStream                        // response.completed's output lists them
	searchesUncounted                           // nothing counts them
)

// tokensBill is what 10 prompt and 5 completion tokens cost at testPrices.
const tokensBill = 10*1000 + 5*2000

func newSearchingAPI(t *testing.T, appetite int, format searchingAnswer) *searchingAPI {
	api := &searchingAPI{}
	api.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		n := searches(body, appetite)
		api.billed.Add(int64(tokensBill + Money(n)*searchFee))
		switch format {
		case searchesCounted:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":%d}}}`, n)
		case searchesStreamed:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
			fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5,\"server_tool_use\":{\"web_search_requests\":%d}}}\n\n", n)
			fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
		case searchesListed:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"object":"response","output":%s,"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":5}}`, searchOutput(n))
		case searchesListedStream:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"object\":\"response\",\"output\":[],\"usage\":null}}\n\n")
			fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"object\":\"response\",\"output\":%s,"+
				"\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":5}}}\n\n", searchOutput(n))
		case searchesUncounted:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":5}}`)
		}
	})
	return api
}

// searchOutput is an OpenAI Responses output that searched n times.
func searchOutput(n int) string {
	items := strings.Repeat(`{"type":"web_search_call","id":"ws","status":"completed","action":{"type":"search","query":"news"}},`, n)
	return `[` + items + `{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[]}]}]`
}

// searches is how often a provider searches for a request body, read with
// encoding/json: appetite times, fewer when its tools bound it, none
// without a web search tool.
func searches(body []byte, appetite int) int {
	var req struct {
		Tools []struct {
			Type    string `json:"type"`
			MaxUses *int   `json:"max_uses"`
		} `json:"tools"`
		MaxToolCalls     *int            `json:"max_tool_calls"`
		WebSearchOptions json.RawMessage `json:"web_search_options"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	n, declared := appetite, req.WebSearchOptions != nil
	for _, tool := range req.Tools {
		if strings.HasPrefix(tool.Type, "web_search") {
			declared = true
			if tool.MaxUses != nil {
				n = min(n, *tool.MaxUses)
			}
		}
	}
	if req.MaxToolCalls != nil {
		n = min(n, *req.MaxToolCalls)
	}
	if !declared {
		return 0
	}
	return n
}

func TestBudgetKeepsWhatSearchesAreBilledWithinTheLimit(t *testing.T) {
	// Each request may search five times ($0.05): a $0.12 Limit holds two.
	// Priced by their tokens alone, all ten went out and were billed $0.50.
	for _, c := range []struct {
		name     string
		format   searchingAnswer
		appetite int
		body     string
		reserve  int64 // BudgetConfig.ToolCallReserve
	}{
		{"anthropic max_uses", searchesCounted, 8,
			`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]}`, 0},
		{"anthropic stream", searchesStreamed, 8,
			`{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"news?"}],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]}`, 0},
		{"responses max_tool_calls", searchesListed, 8,
			`{"model":"m","max_output_tokens":5,"input":"news?","tools":[{"type":"web_search"}],"max_tool_calls":5}`, 0},
		{"responses stream", searchesListedStream, 8,
			`{"model":"m","max_output_tokens":5,"stream":true,"input":"news?","tools":[{"type":"web_search"}],"max_tool_calls":5}`, 0},
		{"responses unbounded", searchesListed, 5,
			`{"model":"m","max_output_tokens":5,"input":"news?","tools":[{"type":"web_search_preview"}]}`, 5},
		{"chat web_search_options", searchesUncounted, 5,
			`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],"web_search_options":{}}`, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := newSearchingAPI(t, c.appetite, c.format)
			limit := 12 * Cent
			// The searches here return nothing billed as input: ToolResultReserve reserves a token a call.
			b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: searchPrices, ToolCallReserve: c.reserve, ToolResultReserve: 1})
			client := api.client(t, b)
			refused := 0
			for range 10 {
				if _, err := send(t, client, api.srv.URL, c.body); err != nil {
					require.ErrorIs(t, err, ErrBudgetExceeded)
					refused++
				}
			}
			assert.LessOrEqual(t, Money(api.billed.Load()), limit, "the provider billed past the Limit")
			assert.Equal(t, 8, refused)
			assert.Equal(t, Money(api.billed.Load()), b.Spent(), "charged what the provider billed")
		})
	}
}

func TestBudgetDoesNotCountACallWhoseTypeANullFollows(t *testing.T) {
	// Each item's type is followed by a null, which encoding/json (a Go
	// SDK) skips, keeping web_search_call, and a decoder keeping the last
	// value reads as no type: the five searches billed were charged as
	// none, and all ten requests went out against a Limit that holds two.
	api := &searchingAPI{}
	api.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		n := searches(body, 5)
		api.billed.Add(int64(tokensBill + Money(n)*searchFee))
		items := strings.Repeat(`{"type":"web_search_call","type":null,"id":"ws","status":"completed"},`, n)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"response","output":[%s{"type":"message","content":[]}],"usage":{"input_tokens":10,"output_tokens":5}}`, items)
	})
	limit := 12 * Cent
	b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: searchPrices})
	client := api.client(t, b)
	for range 10 {
		if _, err := send(t, client, api.srv.URL, `{"model":"m","max_output_tokens":5,"input":"news?","tools":[{"type":"web_search"}],"max_tool_calls":5}`); err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
		}
	}
	assert.LessOrEqual(t, Money(api.billed.Load()), limit, "the provider billed past the Limit")
	assert.Equal(t, Money(api.billed.Load()), b.Spent(), "charged the reservation: the calls are not known")
}

func TestBudgetChargesTheSearchesTheAnswerCounts(t *testing.T) {
	body := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],"tools":[{"type":"web_search_20250305","max_uses":5}]}`
	for _, format := range []searchingAnswer{searchesCounted, searchesStreamed, searchesListed, searchesListedStream} {
		api := newSearchingAPI(t, 2, format)
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: searchPrices})
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.NoError(t, err)
		assert.Equal(t, tokensBill+2*searchFee, b.Spent(), "format %d: two searches of the five reserved", format)
	}

	// An answer that does not count the searches (OpenAI's chat
	// completions) is charged the five reserved: nothing says fewer ran.
	api := newSearchingAPI(t, 2, searchesUncounted)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: searchPrices})
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, tokensBill+5*searchFee, b.Spent())

	// Searches an answer counts are charged, even those no tool declared
	// (a stored prompt can bring its own tools).
	api = newSearchingAPI(t, 0, searchesCounted)
	api.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		fmt.Fprint(w, `{"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":3,"web_fetch_requests":4}}}`)
	})
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: searchPrices})
	_, err = send(t, api.client(t, b), api.srv.URL, chatBody("m", 5))
	require.NoError(t, err)
	assert.Equal(t, tokensBill+3*searchFee, b.Spent(), "web fetches are free")
}

func TestBudgetRefusesAToolBilledPerCallWithoutAFee(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 5))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: searchPrices})
	_, err := send(t, api.client(t, b), api.srv.URL,
		`{"model":"m","input":"plot it","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`)
	require.ErrorIs(t, err, ErrUnknownModel)
	require.ErrorIs(t, err, ErrUnpricedTool)
	assert.Contains(t, err.Error(), `tool "code_interpreter" runs on the provider's side in a container`)
	assert.Contains(t, err.Error(), "BudgetConfig.ToolPrices")
	assert.Zero(t, api.hits.Load(), "nothing may be sent")

	// Without ToolPrices, a web search is refused too.
	b = newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err = send(t, api.client(t, b), api.srv.URL, `{"model":"m","input":"news?","tools":[{"type":"web_search"}]}`)
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.Zero(t, api.hits.Load())

	// A fee in any case prices it: $0.03 for its one container.
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: map[string]Money{"Code_Interpreter": 3 * Cent}})
	_, err = send(t, api.client(t, b), api.srv.URL,
		`{"model":"m","input":"plot it","max_tool_calls":1,"tools":[{"type":"code_interpreter"}]}`)
	require.NoError(t, err)
	assert.Equal(t, tokensBill+3*Cent, b.Spent())
}

func TestBudgetPassesToolsThatCostTokensOnly(t *testing.T) {
	api := newFakeAPI(t, answerUsage(10, 5))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, `{"model":"m","max_tokens":5,"messages":[],"tools":[`+
		`{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"type":{"type":"string"}}}}},`+
		`{"name":"g","input_schema":{"type":"object"}},{"type":"custom","name":"h"},`+
		`{"type":"web_fetch_20250910","max_uses":3},{"type":"bash_20250124"},{"type":"text_editor_20250728"},`+
		`{"type":"computer_20250124"},{"type":"memory_20250818"},{"type":"computer_use_preview"},{"type":"mcp"},`+
		`{"type":"local_shell"},{"type":"shell"},{"type":"apply_patch"},{"type":"computer"},`+
		`{"type":"namespace","name":"crm","tools":[{"type":"function","name":"f"}]},{"type":"mcp_toolset","mcp_server_name":"x"}]}`)
	require.NoError(t, err)
	assert.Equal(t, Money(tokensBill), b.Spent())
}

func TestReadServerToolsReadsAsTheDearestServer(t *testing.T) {
	for _, c := range []struct {
		body      string
		want      *serverTools
		ambiguous bool
	}{
		{`{"tools":[{"type":"function"}]}`, nil, false},
		{`{"tools":null,"web_search_options":null}`, nil, false},
		{`{"tools":{"type":"web_search"}}`, nil, false}, // not an array: servers refuse it
		{`{"tools":["web_search",1]}`, nil, false},
		{`{"tools":[{"type":"web_search_20250305","max_uses":2.5}]}`, &serverTools{List: []serverTool{{Type: "web_search_20250305", MaxUses: 3}}}, false},
		{`{"max_tool_calls":4,"tools":[{"type":"Web_Search"},{"type":"file_search"}]}`,
			&serverTools{List: []serverTool{{Type: "web_search", MaxUses: 0}, {Type: "file_search", MaxUses: 0}}, MaxToolCalls: 4}, false},
		{`{"web_search_options":{}}`, &serverTools{List: []serverTool{{Type: "web_search", MaxUses: 0}}}, false},
		// Go's decoder reads TYPE as type, and keeps a value before a null.
		{`{"tools":[{"type":"function","TYPE":"web_search"}]}`, &serverTools{List: []serverTool{{Type: "web_search", MaxUses: 0}}}, false},
		{`{"tools":[{"type":"web_search","type":null}]}`, &serverTools{List: []serverTool{{Type: "web_search", MaxUses: 0}}}, false},
		{`{"tools":[{"\u0074ype":"web_search","type":"function"}]}`, &serverTools{List: []serverTool{{Type: "web_search", MaxUses: 0}}}, false},
		{`{"tools":[{"type":"web_search","max_uses":"5"}]}`, nil, true},
		{`{"tools":[{"type":"web_search","Max_Uses":5}]}`, nil, true},
		{`{"tools":[{"type":"web_search","max_uses":5,"max_uses":null}]}`, nil, true},
		{`{"tools":[{"type":"web_search"}],"MAX_TOOL_CALLS":1}`, nil, true},
		{`{"tools":[{"type":"web_search"}],"max_tool_calls":"1"}`, nil, true},
		{`{"tools":[{"type":"web_fetch_20250910","max_uses":2,"max_content_tokens":1e4}]}`,
			&serverTools{List: []serverTool{{Type: "web_fetch_20250910", MaxUses: 2, MaxContentTokens: 10_000}}}, false},
		{`{"tools":[{"type":"web_fetch_20250910","max_content_tokens":null}]}`, &serverTools{List: []serverTool{{Type: "web_fetch_20250910"}}}, false},
		// max_content_tokens, spelled as some servers read it and others not.
		{`{"tools":[{"type":"web_fetch_20250910","Max_Content_Tokens":100}]}`, nil, true},
		{`{"tools":[{"type":"web_fetch_20250910","max_content_tok\u0065ns":100}]}`, // an escape servers all decode
			&serverTools{List: []serverTool{{Type: "web_fetch_20250910", MaxContentTokens: 100}}}, false},
		{`{"tools":[{"type":"web_fetch_20250910","max_content_tokens":100,"max_content_tokens":null}]}`, nil, true},
		{`{"tools":[{"type":"web_fetch_20250910","max_content_tokens":"100"}]}`, nil, true},
		{`{"tools":[{"type":"web_fetch_20250910","max_content_tokens":true}]}`, nil, true},
		// Gemini's built-in tools, as LiteLLM takes them: the key names the tool.
		{`{"tools":[{"googleSearch":{}},{"type":"function","function":{"name":"googleSearch"}}]}`,
			&serverTools{List: []serverTool{{Type: "google_search"}}}, false},
		{`{"tools":[{"google_search_retrieval":{"dynamic_retrieval_config":{}}},{"URLCONTEXT":{}},{"codeExecution":{}}]}`,
			&serverTools{List: []serverTool{{Type: "google_search_retrieval"}, {Type: "url_context"}, {Type: "gemini_code_execution"}}}, false},
		{`{"tools":[{"type":"function","googleMaps":{}}]}`, &serverTools{List: []serverTool{{Type: "google_maps"}}}, false},
		{`{"tools":[{"google\u0053earch":{}}]}`, &serverTools{List: []serverTool{{Type: "google_search"}}}, false},
		{`{"tools":[{"type":"google_search","google_search":{}}]}`, &serverTools{List: []serverTool{{Type: "google_search"}}}, false},
		// LiteLLM drops a type (but a few) and sends the key; others read the
		// type; Gemini's API may run two tools of one object.
		{`{"tools":[{"type":"web_search","googleSearch":{}}]}`, nil, true},
		{`{"tools":[{"type":"mcp","googleSearch":{}}]}`, nil, true},
		{`{"tools":[{"googleSearch":{},"urlContext":{}}]}`, nil, true},
		{`{"tools":[{"googleSearch":{},"google_search":{}}]}`, &serverTools{List: []serverTool{{Type: "google_search"}}}, false},
		// Each tool is read where the one before it ends, whatever it is.
		{`{"tools": [ {"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}} , ` +
			`{ "type" : "web_search" } , "x" , [ {"type":"file_search"} ] , {} , 7 , {"type":"code_interpreter"} ] }`,
			&serverTools{List: []serverTool{{Type: "web_search"}, {Type: "code_interpreter", Container: 1}}}, false},
	} {
		cr, err := parseChatRequest([]byte(c.body))
		if c.ambiguous {
			assert.ErrorIs(t, err, errAmbiguousRequest, c.body)
			continue
		}
		require.NoError(t, err, c.body)
		assert.Equal(t, c.want, cr.Tools, c.body)
	}
}

// readTool, which finds where a tool ends as it reads it, ends each
// element of a tools array where validElements ends it: over generated
// objects (with whitespace, nested values and tool keys) and other values.
func TestReadToolEndsWhereTheElementEnds(t *testing.T) {
	g := newJSONGen(61)
	g.keys = append(slices.Clone(genKeys), "type", "Type", "function", "googleSearch", "max_uses")
	read := 0
	for range 2000 {
		var b bytes.Buffer
		g.array(&b, 1+g.r.IntN(4), func(b *bytes.Buffer) {
			if g.r.IntN(3) == 0 {
				g.value(b, 3)
			} else {
				g.object(b, 3)
			}
		})
		tools := b.Bytes()
		require.True(t, json.Valid(tools), "%s", tools)
		for e := range validElements(tools) {
			rest := tools[cap(tools)-cap(e):] // the element and what follows it
			if _, n, err := readTool(rest); err == nil {
				require.Equal(t, len(e), n, "%s in %s", e, tools)
				read++
			}
		}
	}
	assert.Greater(t, read, 3000, "the generator should make tools readTool reads")
}

// scanTools, which reads a tools array in the same pass as its strings,
// reads it as readTools does (the tools, or the first refusal), counts
// the images scanImages counts and ends where it ends: over generated
// arrays of tools made of the keys and values readTool tells apart, in
// every spelling, and of other values.
func TestScanToolsReadsAsReadTools(t *testing.T) {
	g := newJSONGen(67)
	keys := []string{`"type"`, `"Type"`, `"TYPE"`, `"t\u0079pe"`, `"function"`, `"googleSearch"`, `"google_search"`, `"urlContext"`,
		`"max_uses"`, `"Max_Uses"`, `"max_content_tokens"`, `"name"`, `"image_url"`, `"parameters"`}
	values := []string{`"function"`, `"Function"`, `"web_search"`, `"Web_Search_20250305"`, `"mcp"`, `"custom"`, `"google_search"`,
		`"input_image"`, `null`, `3`, `"5"`, `2.5`, `{}`, `{"type":"web_search"}`, `[1,"image"]`, `true`}
	tools, refused := 0, 0
	for range 5000 {
		var b bytes.Buffer
		g.array(&b, g.r.IntN(5), func(b *bytes.Buffer) {
			if g.r.IntN(6) == 0 {
				g.value(b, 2)
				return
			}
			b.WriteByte('{')
			for i := range g.r.IntN(4) {
				if i > 0 {
					b.WriteByte(',')
				}
				g.space(b)
				b.WriteString(keys[g.r.IntN(len(keys))] + ":")
				g.space(b)
				b.WriteString(values[g.r.IntN(len(values))])
				g.space(b)
			}
			b.WriteByte('}')
		})
		p := b.Bytes()
		require.True(t, json.Valid(p), "%s", p)
		var r requestReader
		end := r.scanTools(p, 0)
		wantEnd, wantImages := scanImages(p, 0)
		require.Equal(t, wantEnd, end, "%s", p)
		require.Equal(t, wantImages, r.images, "%s", p)
		list, err := readTools(p)
		require.Equal(t, toolsReading{list, err, true}, r.tools, "%s", p)
		tools += len(list)
		refused += int(b2u(err != nil))
	}
	assert.Greater(t, tools, 1000, "the generator should make tools billed on the provider's side")
	assert.Greater(t, refused, 500, "the generator should make tools servers read differently")
	assert.Less(t, refused, 4000, "the generator should make tools servers read alike")
}

// An agent sends its function tools with every request: reading them,
// the commonest tools, allocates nothing.
func TestParseChatRequestWithFunctionToolsAllocatesNothing(t *testing.T) {
	body := []byte(`{"model":"gpt-4.1-mini","messages":[{"role":"user","content":"hi"}],"tools":[` +
		`{"type":"function","function":{"name":"a","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}},` +
		`{"type":"function","function":{"name":"b"}},{"type":"function","function":{"name":"c"}}]}`)
	cr, err := parseChatRequest(body)
	require.NoError(t, err)
	require.Nil(t, cr.Tools)
	assert.Zero(t, testing.AllocsPerRun(20, func() {
		if _, err := parseChatRequest(body); err != nil {
			t.Fatal(err)
		}
	}))
}

func TestToolFeeFindsTheToolWithoutItsVersion(t *testing.T) {
	prices := map[string]Money{"web_search": Cent, "web_search_preview": 25 * Cent / 10, "code_execution_20250522": 5 * Cent}
	for typ, want := range map[string]Money{
		"web_search_20250305":           Cent,
		"web_search_2025_08_26":         Cent,
		"web_search_preview":            25 * Cent / 10,
		"web_search_preview_2025_03_11": 25 * Cent / 10,
		"code_execution_20250522":       5 * Cent,
		"web_fetch_20250910":            0,
		"mcp":                           0,
	} {
		fee, ok := toolFee(prices, typ)
		assert.True(t, ok, typ)
		assert.Equal(t, want, fee, typ)
	}
	for _, typ := range []string{"code_execution_20250825", "file_search", "image_generation", "web_search_2025", "x_20250101_"} {
		_, ok := toolFee(prices, typ)
		assert.False(t, ok, typ)
	}
	fee, ok := toolFee(map[string]Money{"web_search": Cent}, "web_search_preview")
	assert.True(t, ok)
	assert.Equal(t, Cent, fee, "web_search prices its preview")
	fee, _ = toolFee(map[string]Money{"web_fetch": Cent}, "web_fetch_20250910")
	assert.Equal(t, Cent, fee, "a fee overrides a free tool")
}

func TestToolReserveBoundsEachToolsCalls(t *testing.T) {
	prices := map[string]Money{"web_search": Cent, "file_search": Cent / 4, "image_generation": 3 * Cent, "code_interpreter": 3 * Cent}
	reserve := func(choices int64, maxToolCalls int64, tools ...serverTool) Money {
		m, containers, err := toolReserve(prices, &serverTools{List: tools, MaxToolCalls: maxToolCalls}, 10, choices)
		require.NoError(t, err)
		require.LessOrEqual(t, containers, m)
		return m
	}
	assert.Equal(t, 5*Cent, reserve(1, 0, serverTool{Type: "web_search_20250305", MaxUses: 5}))
	assert.Equal(t, 5*Cent+10*Cent, reserve(1, 0, serverTool{Type: "web_search_20250305", MaxUses: 5}, serverTool{Type: "web_search", MaxUses: 0}))
	assert.Equal(t, 30*Cent, reserve(1, 0, serverTool{Type: "web_search", MaxUses: 0}, serverTool{Type: "image_generation", MaxUses: 0}), "ten calls, at the dearest fee")
	assert.Equal(t, 6*Cent, reserve(1, 2, serverTool{Type: "web_search", MaxUses: 0}, serverTool{Type: "image_generation", MaxUses: 0}), "max_tool_calls bounds them all")
	assert.Equal(t, 2*Cent, reserve(1, 2, serverTool{Type: "web_search", MaxUses: 3}, serverTool{Type: "file_search", MaxUses: 0}))
	assert.Equal(t, 4*Cent, reserve(2, 2, serverTool{Type: "web_search", MaxUses: 0}), "each candidate may search")
	assert.Equal(t, MaxBudgetLimit+1, reserve(maxUsageTokens, maxUsageTokens, serverTool{Type: "image_generation", MaxUses: maxUsageTokens}), "saturates")

	// A container is billed once a session, whatever the calls, at its
	// fee scaled by its GB.
	assert.Equal(t, 3*Cent, reserve(1, 0, serverTool{Type: "code_interpreter", Container: 1}), "one container, not ten calls")
	assert.Equal(t, 192*Cent+2*Cent, reserve(1, 2, serverTool{Type: "code_interpreter", Container: 64}, serverTool{Type: "web_search"}),
		"max_tool_calls bounds the calls, not the container")
	assert.Equal(t, 2*12*Cent, reserve(2, 0, serverTool{Type: "shell", Container: 4}), "a hosted shell takes code_interpreter's fee; each candidate may make one")
	_, containers, err := toolReserve(prices, &serverTools{List: []serverTool{{Type: "shell", Container: 16}, {Type: "web_search", MaxUses: 1}}}, 10, 1)
	require.NoError(t, err)
	assert.Equal(t, 48*Cent, containers)
	_, _, err = toolReserve(map[string]Money{"web_search": Cent}, &serverTools{List: []serverTool{{Type: "shell", Container: 1}}}, 10, 1)
	assert.ErrorContains(t, err, `tool "shell" runs on the provider's side in a container`, "a hosted shell without a fee, nor code_interpreter's, is not free")
	fee, ok := toolFee(map[string]Money{"shell": Cent, "code_interpreter": 3 * Cent}, "shell")
	assert.True(t, ok)
	assert.Equal(t, Cent, fee, "its own fee first")
}

func TestObserveUsageReadsServerToolCounts(t *testing.T) {
	for _, c := range []struct {
		usage string
		want  Usage
		ok    bool
	}{
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":3,"web_fetch_requests":1}}`,
			Usage{InputTokens: 10, OutputTokens: 5, ToolCalls: ToolCalls{WebSearch: 3, WebFetch: 1}, counted: 1<<webSearch | 1<<webFetch}, true},
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":0}}`,
			Usage{InputTokens: 10, OutputTokens: 5, counted: 1 << webSearch}, true},
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":null}`, Usage{InputTokens: 10, OutputTokens: 5}, true},
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":-1}}`, Usage{}, false},
		// A key in another case: encoding/json's reading, the dearer, not ok.
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":{"Web_Search_Requests":1}}`,
			Usage{InputTokens: 10, OutputTokens: 5, ToolCalls: ToolCalls{WebSearch: 1}, counted: 1 << webSearch}, false},
		{`{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":"3"}}`, Usage{}, false},
	} {
		_, rep := observe(t, "application/json", strings.NewReader(`{"usage":`+c.usage+`}`))
		assert.Equal(t, usageReport{1, c.want, c.ok}, rep, c.usage)
	}
	// A stream: a later event's lower count does not lower it.
	stream := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4,\"server_tool_use\":{\"web_search_requests\":2}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5,\"server_tool_use\":{\"web_search_requests\":0}}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 10, OutputTokens: 5, ToolCalls: ToolCalls{WebSearch: 2}, counted: 1 << webSearch}, true}, rep)
}

func TestNewBudgetChecksToolPrices(t *testing.T) {
	for _, c := range []struct {
		cfg  BudgetConfig
		want string
	}{
		{BudgetConfig{ToolPrices: map[string]Money{"web_search": -1}}, `httpguard: budget: ToolPrices: tool "web_search": a fee per call must be in [$0, $1000.00], got -$0.000000001`},
		{BudgetConfig{ToolPrices: map[string]Money{"": Cent}}, `httpguard: budget: ToolPrices: tool "": a fee per call must be in [$0, $1000.00], got $0.01`},
		{BudgetConfig{ToolCallReserve: -1}, `httpguard: budget: ToolCallReserve must be >= 0, got -1`},
	} {
		c.cfg.Limit, c.cfg.Prices = Dollar, testPrices
		_, err := NewBudget(c.cfg)
		assert.EqualError(t, err, c.want)
	}
}

func TestBudgetRefusalNamesWhatTheToolsReserve(t *testing.T) {
	api := newSearchingAPI(t, 5, searchesCounted)
	b := newTestBudget(t, BudgetConfig{Limit: 4 * Cent, ToolPrices: searchPrices})
	_, err := send(t, api.client(t, b), api.srv.URL, `{"model":"m","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","max_uses":5}]}`)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Contains(t, err.Error(), "and $0.05 for the calls of server tools (max_uses or max_tool_calls, else ToolCallReserve; lower them to need less)")
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, 5*Cent, be.ToolReserve)
	assert.Zero(t, api.hits.Load())
}

func TestBudgetChargesListedSearchesBeyondTheReservation(t *testing.T) {
	// OpenAI's Responses web_search without max_tool_calls (what openai-go
	// writes by default) reserves ToolCallReserve (10) searches; one that
	// searches 15 times lists 15 web_search_call items and is charged them
	// all, as an answer longer than its reservation is. Before the output
	// was counted, 20 requests were billed $1.35 and charged $0.90.
	api := newSearchingAPI(t, 15, searchesListed)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: searchPrices})
	client := api.client(t, b)
	for range 20 {
		send(t, client, api.srv.URL, `{"model":"m","max_output_tokens":5,"input":"news?","tools":[{"type":"web_search"}]}`)
	}
	assert.Equal(t, Money(api.billed.Load()), b.Spent(), "charged what the provider billed")
}

func TestObserveUsageCountsTheCallsAResponsesOutputLists(t *testing.T) {
	const usage = `"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":5}`
	tokens := Usage{InputTokens: 10, OutputTokens: 5}
	listed := func(calls ToolCalls) Usage {
		u := tokens
		u.ToolCalls, u.counted = calls, outputCounts
		return u
	}
	for _, c := range []struct {
		answer string
		want   Usage
	}{
		{`{"output":[{"type":"web_search_call"},{"type":"file_search_call"},{"type":"file_search_call"},{"type":"code_interpreter_call"},` +
			`{"type":"image_generation_call"},{"type":"mcp_call"},{"type":"message","content":[{"type":"web_search_call"}]}],` + usage + `}`,
			listed(ToolCalls{WebSearch: 1, FileSearch: 2, CodeInterpreter: 1, ImageGeneration: 1})},
		{`{` + usage + `,"output":[]}`, listed(ToolCalls{})},
		{`{"output":[{"type":"web\u005fsearch_call"},{"type":"message","type":"web_search_call"}],` + usage + `}`, listed(ToolCalls{WebSearch: 2})},
		// Of two outputs, each kind its most.
		{`{"output":[{"type":"web_search_call"}],"output":[{"type":"file_search_call"}],` + usage + `}`, listed(ToolCalls{WebSearch: 1, FileSearch: 1})},
		// What servers would read differently counts nothing: the
		// reservation is charged.
		{`{"output":[{"Type":"web_search_call"}],` + usage + `}`, tokens},
		{`{"OUTPUT":[{"type":"web_search_call"}],"output":[],` + usage + `}`, tokens},
		{`{"output":{"type":"web_search_call"},` + usage + `}`, tokens},
		{`{"output":[{"type":"web_search_call","x":"` + strings.Repeat("a", maxResponseValue) + `"}],` + usage + `}`, tokens},
	} {
		for _, size := range []int{1, 7, 512, len(c.answer)} {
			_, rep := observe(t, "application/json", iotestChunks(c.answer, size))
			assert.Equal(t, usageReport{1, c.want, true}, rep, "%.120s in reads of %d", c.answer, size)
		}
	}

	// A stream: the response objects of its events, each kind its most.
	stream := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"output\":[],\"usage\":null}}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"web_search_call\"},{\"type\":\"web_search_call\"}]," + usage + "}}\n\n"
	_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
	assert.Equal(t, usageReport{1, listed(ToolCalls{WebSearch: 2}), true}, rep)
	bad := strings.Replace(stream, `"output":[]`, `"output":[{"TYPE":"web_search_call"}]`, 1)
	_, rep = observe(t, "text/event-stream", strings.NewReader(bad))
	assert.Equal(t, usageReport{1, tokens, true}, rep, "an output that cannot be counted leaves the calls unknown")
}

// iotestChunks reads s size bytes at a time.
func iotestChunks(s string, size int) io.Reader {
	sizes := make([]int, len(s)/size+1)
	for i := range sizes {
		sizes[i] = size
	}
	return &splitReader{data: []byte(s), sizes: sizes}
}

func TestBudgetChargesAModelsFeePerRequest(t *testing.T) {
	// Perplexity's sonar bills $5 per 1,000 requests besides its tokens: a
	// $0.012 Limit holds two requests, not (priced by tokens alone) all ten.
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		billed.Add(int64(tokensBill + 5*Cent/10))
		answerUsage(10, 5)(w, r, b)
	})
	prices, err := LoadPrices(strings.NewReader(`{"sonar": {"input": 1, "output": 2, "request": 0.005}}`))
	require.NoError(t, err)
	assert.Equal(t, Price{Input: Dollar, Output: 2 * Dollar, Request: 5 * Cent / 10}, prices["sonar"])
	b := newTestBudget(t, BudgetConfig{Limit: 12 * Cent / 10, Prices: prices})
	client := api.client(t, b)
	refused := 0
	for range 10 {
		if _, err := send(t, client, api.srv.URL, chatBody("sonar", 5)); err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			refused++
		}
	}
	assert.Equal(t, 8, refused)
	assert.Equal(t, Money(billed.Load()), b.Spent(), "charged what the provider billed")
	_, err = send(t, client, api.srv.URL, chatBody("sonar", 5))
	assert.ErrorContains(t, err, "and $0.005 in the model's fee per request")
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, 5*Dollar/1000, be.RequestFees)

	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 2, "request": 5000}}`))
	assert.EqualError(t, err, `httpguard: prices: model "m": Request must be in [$0, $1000.00] per request, got $5000.00`)
}

func TestBudgetPricesGeminisBuiltInToolsAsLiteLLMTakesThem(t *testing.T) {
	// Through LiteLLM, {"googleSearch": {}} grounds a Gemini answer in a
	// search, billed $35 per 1,000 grounded prompts besides the tokens. Read
	// as a function, it went out unpriced: all ten were sent and billed
	// $0.35 against a $0.08 Limit.
	const groundingFee = 35 * Cent / 10
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req struct{ Tools []map[string]json.RawMessage }
		require.NoError(t, json.Unmarshal(body, &req))
		fee := Money(0)
		for _, tool := range req.Tools {
			if _, ok := tool["googleSearch"]; ok {
				fee = groundingFee
			}
		}
		billed.Add(int64(tokensBill + fee))
		answerUsage(10, 5)(w, r, body)
	})
	grounded := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],"tools":[{"googleSearch":{}}]}`

	limit := 8 * Cent
	b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: map[string]Money{"google_search": groundingFee},
		ToolCallReserve: 1, ToolResultReserve: 1})
	client := api.client(t, b)
	refused := 0
	for range 10 {
		if _, err := send(t, client, api.srv.URL, grounded); err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			refused++
		}
	}
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider billed past the Limit")
	assert.Equal(t, 8, refused)
	assert.Equal(t, Money(billed.Load()), b.Spent(), "charged the reservation, which the answer does not count")

	// Without a fee for it, it is refused unsent, as any tool billed per call.
	hits := api.hits.Load()
	b = newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := send(t, api.client(t, b), api.srv.URL, grounded)
	require.ErrorIs(t, err, ErrUnpricedTool)
	assert.Contains(t, err.Error(), `tool "google_search"`)
	assert.Equal(t, hits, api.hits.Load(), "nothing may be sent")

	// URL context and code execution cost their tokens only; LiteLLM's
	// computer_use, Gemini's computerUse, is the client's.
	_, err = send(t, api.client(t, b), api.srv.URL,
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"read https://example.com"}],`+
			`"tools":[{"urlContext":{}},{"codeExecution":{}},{"type":"computer_use","environment":"ENVIRONMENT_BROWSER"}]}`)
	require.NoError(t, err)
}

// gpt5Price is priced as OpenAI prices gpt-5 (per million tokens: $1.25
// input, $0.125 cached, $10 output).
var gpt5Price = Price{Input: 125 * Cent, CachedInput: 125 * Cent / 10, Output: 10 * Dollar}

// runAtItsReservation sends body to path through a Budget made of cfg
// whose Limit is exactly what the Budget reserves for the request (learned
// from a first Budget with room to spare), so that the request fits and
// nothing else does: what the server bills must then stay within that
// Limit. answer answers each attempt and adds what the provider bills for
// it to billed. It returns the second Budget's Settlement and Limit.
func runAtItsReservation(t *testing.T, cfg BudgetConfig, path, body string, billed *atomic.Int64,
	answer func(w http.ResponseWriter, r *http.Request, body []byte, billed *atomic.Int64)) (Settlement, Money) {
	t.Helper()
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) { answer(w, r, b, billed) })
	do := func(c BudgetConfig) Settlement {
		var got Settlement
		c.OnSettle = func(s Settlement) { got = s }
		b, err := NewBudget(c)
		require.NoError(t, err)
		req, err := http.NewRequest("POST", api.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := api.client(t, b).Do(req)
		require.NoError(t, err, "the request is priced and sent")
		_, err = io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return got
	}
	probe := cfg
	probe.Limit = 1000 * Dollar
	limit := do(probe).Reserved
	require.Positive(t, limit)
	billed.Store(0)
	cfg.Limit = limit
	return do(cfg), limit
}

// OpenAI's Responses API runs the shell tool itself when the tool names a
// hosted environment ({"type": "shell", "environment": {"type":
// "container_auto"}}): it provisions a container, billed per session as
// Code Interpreter's ($0.03 for the default 1 GB), runs each shell_call
// there, feeds its output back to the model and samples it again, within
// the one response, so that each later sampling re-reads the prompt, the
// earlier output and every result, billed as input. Priced as a shell the
// client runs, such a request reserved no container and no results: a
// 4-call run on a 2 kB prompt billed about $0.076 against a Limit of about
// $0.0089, and was charged about $0.046 of it.
func TestHostedShellIsPricedAsAServerTool(t *testing.T) {
	const calls, resultTokens = 4, 3_000
	body := `{"model":"gpt-5","max_output_tokens":500,"max_tool_calls":4,` +
		`"tools":[{"type":"shell","environment":{"type":"container_auto"}}],` +
		`"input":"` + strings.Repeat("Run the test suite and fix what fails. ", 50) + `"}`
	var billed atomic.Int64
	s, limit := runAtItsReservation(t, BudgetConfig{Prices: PriceTable{"gpt-5": gpt5Price}, ToolPrices: map[string]Money{"code_interpreter": 3 * Cent}},
		"/v1/responses", body, &billed,
		func(w http.ResponseWriter, r *http.Request, b []byte, billed *atomic.Int64) {
			prompt := int64(len(b)) / 4 // about 4 bytes a token: well below the Budget's bound
			var u Usage
			var out strings.Builder
			for i := range calls + 1 { // a sampling before each call, and one after the last
				u.InputTokens += prompt + int64(i)*resultTokens // each sampling re-reads every result before it
				if i < calls {
					fmt.Fprintf(&out, `{"type":"shell_call","id":"sh_%d","call_id":"c%d","action":{"commands":["pytest -x"]},"status":"completed"},`+
						`{"type":"shell_call_output","call_id":"c%d","output":[{"stdout":"...","stderr":"","outcome":{"type":"exit","exit_code":1}}]},`, i, i, i)
				}
			}
			u.OutputTokens = 500
			billed.Add(int64(gpt5Price.Cost(u)) + int64(3*Cent)) // the tokens, and one 1 GB container
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"resp_1","object":"response","status":"completed","model":"gpt-5","output":[%s`+
				`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"done"}]}],`+
				`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}}`,
				out.String(), u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens)
		})
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider billed %v against a Limit of %v", Money(billed.Load()), limit)
	assert.GreaterOrEqual(t, s.Charged, Money(billed.Load()), "the Budget charged %v for an attempt the provider billed %v", s.Charged, Money(billed.Load()))
}

// OpenAI bills a Code Interpreter container by its memory_limit: $0.03 for
// 1 GB (the default), $0.12 for 4 GB, $0.48 for 16 GB, $1.92 for 64 GB.
// Priced at the one fee of ToolPrices["code_interpreter"], a request for a
// 64 GB container reserved and was charged $0.03 for a container billed
// $1.92: billed about $1.93 against a Limit of about $0.051, charged about
// $0.035.
func TestCodeInterpreterContainerSizeIsPriced(t *testing.T) {
	body := `{"model":"gpt-5","max_output_tokens":500,"max_tool_calls":1,` +
		`"tools":[{"type":"code_interpreter","container":{"type":"auto","memory_limit":"64g"}}],` +
		`"input":"Load the 20 GB parquet file and sum the amount column."}`
	var billed atomic.Int64
	s, limit := runAtItsReservation(t, BudgetConfig{Prices: PriceTable{"gpt-5": gpt5Price}, ToolPrices: map[string]Money{"code_interpreter": 3 * Cent}},
		"/v1/responses", body, &billed,
		func(w http.ResponseWriter, r *http.Request, b []byte, billed *atomic.Int64) {
			u := Usage{InputTokens: int64(len(b)) / 4 * 2, OutputTokens: 500}
			billed.Add(int64(gpt5Price.Cost(u)) + int64(192*Cent)) // the tokens, and one 64 GB container
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"resp_1","object":"response","status":"completed","model":"gpt-5","output":[`+
				`{"type":"code_interpreter_call","id":"ci_1","code":"...","container_id":"cntr_1","outputs":null,"status":"completed"},`+
				`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"42"}]}],`+
				`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"total_tokens":%d}}`,
				u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens)
		})
	assert.GreaterOrEqual(t, s.Charged, Money(billed.Load()), "the Budget charged %v for an attempt the provider billed %v", s.Charged, Money(billed.Load()))
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider billed %v against a Limit of %v", Money(billed.Load()), limit)
}

// answerResponse answers as OpenAI's Responses API, with items (output
// items, each followed by a comma) before its message, 10 input and 5
// output tokens.
func answerResponse(items string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"resp_1","object":"response","status":"completed","model":"m","output":[`+items+
			`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"42"}]}],`+
			`"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}`)
	}
}

// OpenAI bills a container once a session, not once a call, and makes one
// for a response with an auto container even when the model calls no tool
// (community.openai.com/t/1364328): a request declaring a container tool
// is charged its container, whatever its answer lists.
func TestContainerIsChargedOnceAResponse(t *testing.T) {
	const body = `{"model":"m","input":"plot it","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`
	prices := map[string]Money{"code_interpreter": 3 * Cent}

	api := newFakeAPI(t, answerResponse(""))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: prices})
	readThrough(t, api, b, "/v1/responses", body)
	assert.Equal(t, tokensBill+3*Cent, b.Spent(), "no call listed: the container is billed all the same")

	const call = `{"type":"code_interpreter_call","id":"ci_1","code":"...","container_id":"cntr_1","outputs":null,"status":"completed"},`
	api = newFakeAPI(t, answerResponse(strings.Repeat(call, 3)))
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: prices})
	readThrough(t, api, b, "/v1/responses", body)
	assert.Equal(t, tokensBill+3*Cent, b.Spent(), "three calls in the one container")

	// Nor are ten calls (ToolCallReserve) reserved: the container's fee
	// adds 3 cents to the reservation, not 30.
	reservation := func(fee Money) Money {
		var reserved Money
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: map[string]Money{"code_interpreter": fee}, OnSettle: func(s Settlement) { reserved = s.Reserved }})
		readThrough(t, newFakeAPI(t, answerResponse(call)), b, "/v1/responses", body)
		return reserved
	}
	assert.Equal(t, 3*Cent, reservation(3*Cent)-reservation(0))
}

// A shell with a hosted environment runs in a container priced as
// ToolPrices["shell"], else as code_interpreter's; without either it is
// refused, as any tool the provider bills that ToolPrices does not price.
// A shell without one (absent, null, "local") is the client's and costs
// its tokens only.
func TestHostedShellContainerIsPriced(t *testing.T) {
	api := newFakeAPI(t, answerResponse(`{"type":"shell_call","id":"sh_1","call_id":"c1","action":{"commands":["ls"]},"status":"completed"},`))
	for _, c := range []struct {
		tools  string
		prices map[string]Money
		want   Money // the fees charged besides the tokens; -1: refused
	}{
		{`{"type":"shell","environment":{"type":"container_auto","memory_limit":"4g"}}`, map[string]Money{"shell": 5 * Cent}, 20 * Cent},
		{`{"type":"shell","environment":{"type":"container_auto"}}`, map[string]Money{"shell": 5 * Cent, "code_interpreter": 3 * Cent}, 5 * Cent},
		{`{"type":"shell","environment":{"type":"container_auto"}}`, map[string]Money{"code_interpreter": 3 * Cent}, 3 * Cent},
		{`{"type":"shell","environment":{"type":"container_reference","container_id":"cntr_1"}}`, map[string]Money{"shell": 3 * Cent}, 192 * Cent},
		{`{"type":"shell","environment":{"type":"container_auto"}}`, map[string]Money{"web_search": Cent}, -1},
		{`{"type":"shell","environment":{"type":"container_auto"}}`, nil, -1},
		{`{"type":"shell"}`, nil, 0},
		{`{"type":"shell","environment":null}`, nil, 0},
		{`{"type":"shell","environment":{"type":"local"}}`, map[string]Money{"shell": 3 * Cent}, 0},
	} {
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, ToolPrices: c.prices})
		hits := api.hits.Load()
		req := mustRequest(t, api.srv.URL+"/v1/responses", `{"model":"m","input":"ls","max_tool_calls":1,"tools":[`+c.tools+`]}`)
		resp, err := api.client(t, b).Do(req)
		if c.want < 0 {
			require.ErrorIs(t, err, ErrUnpricedTool, c.tools)
			assert.ErrorContains(t, err, `tool "shell"`)
			assert.Equal(t, hits, api.hits.Load(), "nothing may be sent: %s", c.tools)
			continue
		}
		require.NoError(t, err, c.tools)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, tokensBill+c.want, b.Spent(), "%s, %v", c.tools, c.prices)
	}
}

// mustRequest is a POST of body to url.
func mustRequest(t *testing.T, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	return req
}

// Where a container tool runs is read as the server that would bill most
// reads it: a memory_limit by its decoded value (a null after one keeps
// it, as encoding/json does), an existing container named by id at the
// largest size, a spelling some servers ignore (another case, the member
// twice, which encoding/json merges) refused; a memory_limit of no known
// size is refused rather than priced lower.
func TestContainerToolsAreReadAsTheDearestServer(t *testing.T) {
	ci := func(gb int64) []serverTool { return []serverTool{{Type: "code_interpreter", Container: gb}} }
	shell := func(gb int64) []serverTool { return []serverTool{{Type: "shell", Container: gb}} }
	local := []serverTool{{Type: "local_shell"}}
	const ambiguous, unpriced = "ambiguous", "unpriced"
	for _, c := range []struct {
		tools string
		want  []serverTool
		err   string
	}{
		{`{"type":"code_interpreter"}`, ci(1), ""},
		{`{"type":"code_interpreter","container":null}`, ci(1), ""},
		{`{"type":"code_interpreter","container":{"type":"auto"}}`, ci(1), ""},
		{`{"type":"code_interpreter","container":{"type":"auto","memory_limit":null}}`, ci(1), ""},
		{`{"type":"code_interpreter","container":{"type":"auto","memory_limit":"4g"}}`, ci(4), ""},
		{`{"container":{"memory_limit":"16g","file_ids":["f"]},"type":"Code_Interpreter"}`, ci(16), ""},
		{`{"type":"code_interpreter","container":{"memory_limit":"64g","memory_limit":null}}`, ci(64), ""},
		{`{"type":"code_interpreter","container":{"memory_limit":"64g","memory_limit":"1g"}}`, ci(1), ""},
		{`{"type":"code_interpreter","container":{"memory_l\u0069mit":"\u0036\u0034g"}}`, ci(64), ""},
		{`{"type":"code_interpreter","container":"cntr_1"}`, ci(64), ""},
		// A container object of a type to come (one naming an existing
		// container) is priced as a shell's environment of one: the largest.
		{`{"type":"code_interpreter","container":{"type":"container_reference","container_id":"cntr_1"}}`, ci(64), ""},
		{`{"type":"code_interpreter","container":{"type":"next","memory_limit":"1g"}}`, ci(64), ""},
		{`{"type":"code_interpreter","cont\u0061iner":{"memory_limit":"64g"}}`, ci(64), ""},
		{`{"type":"shell","\u0045nvironment":{"type":"container_auto"}}`, nil, ambiguous},
		{`{"type":"code_interpreter","container":{"Memory_Limit":"64g"}}`, nil, ambiguous},
		{`{"type":"code_interpreter","container":{"type":"auto"},"container":{"memory_limit":"64g"}}`, nil, ambiguous},
		{`{"type":"code_interpreter","container":{"memory_limit":"2g"}}`, nil, unpriced},
		{`{"type":"code_interpreter","container":{"memory_limit":"64G"}}`, nil, unpriced},
		{`{"type":"code_interpreter","container":{"memory_limit":64}}`, nil, unpriced},
		{`{"type":"shell"}`, local, ""},
		{`{"type":"shell","environment":null}`, local, ""},
		{`{"type":"shell","environment":{"type":"local"}}`, local, ""},
		{`{"type":"shell","environment":{"type":"container_auto"}}`, shell(1), ""},
		{`{"environment":{"type":"container_auto","memory_limit":"16g"},"type":"SHELL"}`, shell(16), ""},
		{`{"type":"shell","environment":{"type":"local","type":"container_auto"}}`, shell(1), ""},
		{`{"type":"shell","environment":{"type":"container_auto","type":null}}`, shell(1), ""},
		{`{"type":"shell","environment":{"type":"container_reference","container_id":"cntr_1"}}`, shell(64), ""},
		{`{"type":"shell","environment":{"type":"container_next"}}`, shell(64), ""},
		{`{"type":"shell","environment":{"type":"local","Type":"container_auto"}}`, nil, ambiguous},
		{`{"type":"shell","environment":{"type":"local"},"environment":{"type":"local"}}`, nil, ambiguous},
		{`{"type":"shell","environment":{"type":"container_auto","memory_limit":"8g"}}`, nil, unpriced},
		{`{"type":"shell","Environment":{"type":"container_auto"}}`, nil, ambiguous},
		{`{"type":"code_interpreter","CONTAINER":{"memory_limit":"64g"}}`, nil, ambiguous},
		// Other tools' members of those names are not read.
		{`{"type":"web_search","container":"x","environment":{"Type":1}}`, []serverTool{{Type: "web_search"}}, ""},
		{`{"type":"function","name":"f","environment":{},"Environment":{}}`, nil, ""},
	} {
		for _, read := range []func() ([]serverTool, error){
			func() ([]serverTool, error) { return readTools([]byte(`[` + c.tools + `]`)) },
			func() ([]serverTool, error) {
				cr, err := parseChatRequest([]byte(`{"model":"m","input":"x","tools":[` + c.tools + `]}`))
				if cr.Tools == nil {
					return nil, err
				}
				return cr.Tools.List, err
			},
		} {
			list, err := read()
			switch c.err {
			case ambiguous:
				assert.ErrorIs(t, err, errAmbiguousRequest, c.tools)
			case unpriced:
				require.Error(t, err, c.tools)
				assert.NotErrorIs(t, err, errAmbiguousRequest, c.tools)
				assert.ErrorContains(t, err, "memory_limit", c.tools)
			default:
				require.NoError(t, err, c.tools)
				assert.Equal(t, c.want, list, c.tools)
			}
		}
	}
}

// A hosted shell's calls are answered in the same response: its output
// lists each shell_call_output, a call OpenAI ran in a container it bills.
// A request that does not declare the shell (a stored prompt's tools) is
// charged each at the shell's fee, else Code Interpreter's, as a 1 GB
// container; a shell the client runs answers with its shell_call alone and
// is charged nothing. A declared hosted shell is charged its container
// once. Found by a review: a stored prompt's hosted shell was charged
// nothing.
func TestBudgetChargesTheHostedShellCallsAnAnswerLists(t *testing.T) {
	const call = `{"type":"shell_call","id":"sh","call_id":"c","action":{"commands":["ls"]},"status":"completed"},`
	const ran = `{"type":"shell_call_output","call_id":"c","output":[{"stdout":"a","stderr":"","outcome":{"type":"exit","exit_code":0}}]},`
	for _, c := range []struct {
		name, tools, output string
		prices              map[string]Money
		fees                Money
	}{
		{"stored prompt, hosted", ``, call + ran + call + ran, map[string]Money{"shell": 3 * Cent}, 6 * Cent},
		{"stored prompt, hosted, code_interpreter's fee", ``, call + ran, map[string]Money{"code_interpreter": 3 * Cent}, 3 * Cent},
		{"stored prompt, the client's shell", ``, call, map[string]Money{"shell": 3 * Cent}, 0},
		{"declared hosted shell: its container once", `,"tools":[{"type":"shell","environment":{"type":"container_auto"}}],"max_tool_calls":2`,
			call + ran + call + ran, map[string]Money{"shell": 3 * Cent}, 3 * Cent},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"object":"response","status":"completed","model":"m","output":[`+c.output+
					`{"type":"message","role":"assistant","content":[]}],"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}`)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: c.prices, StoredInputReserve: 1000, OnSettle: func(s Settlement) { got = s }})
			body := `{"model":"m","prompt":{"id":"pmpt_1"},"input":"run it","max_output_tokens":100` + c.tools + `}`
			readThrough(t, api, b, "/v1/responses", body)
			assert.Equal(t, testPrices["m"].Cost(Usage{InputTokens: 10, OutputTokens: 5})+c.fees, got.Charged)
		})
	}
}
