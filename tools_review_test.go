package httpguard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Review of server tools' pricing: each test holds the promise, not the
// implementation: across requests, what a provider that bills every
// search may bill stays within the Budget's Limit.

// sendAll sends body n times through b to api and returns how many the
// Budget refused.
func sendAll(t *testing.T, api *searchingAPI, b *Budget, body string, n int) (refused int) {
	t.Helper()
	client := api.client(t, b)
	for range n {
		if _, err := send(t, client, api.srv.URL, body); err != nil {
			refused++
		}
	}
	return refused
}

func TestBudgetReadsARepeatedToolsKeyAsAMergingDecoderDoes(t *testing.T) {
	// encoding/json (a Go relay decoding into its own structs, as the
	// searchingAPI does) decodes a repeated array into the elements the
	// first one filled: the second tools below adds a name to the first's
	// web search, which keeps its type. Read as the last tools alone, the
	// request declared a client tool and was priced by its tokens only.
	body := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],` +
		`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}],"tools":[{"name":"web_search"}]}`
	for _, format := range []searchingAnswer{searchesCounted, searchesUncounted} {
		api := newSearchingAPI(t, 5, format)
		limit := 12 * Cent
		b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: searchPrices})
		sendAll(t, api, b, body, 10)
		assert.LessOrEqual(t, Money(api.billed.Load()), limit, "format %d: the provider billed past the Limit", format)
		assert.LessOrEqual(t, Money(api.billed.Load()), b.Spent(), "format %d: charged less than billed", format)
	}
}

func TestParseChatRequestRefusesToolsServersReadDifferently(t *testing.T) {
	for _, body := range []string{
		`{"tools":[{"type":"web_search_20250305"}],"tools":[{"name":"web_search"}]}`,
		`{"tools":[{"type":"web_search"}],"\u0074ools":[]}`,
		`{"tools":[{"type":"web_search_20250305","TYPE":"bash_20250124"}]}`,
		`{"tools":[{"\u0074ype":"web_search","Type":"mcp"}]}`,
	} {
		_, err := parseChatRequest([]byte(body))
		assert.ErrorIs(t, err, errAmbiguousRequest, body)
	}
}

func TestBudgetReadsAToolsTypeAsAnExactServerDoes(t *testing.T) {
	// A server that reads keys as written (a Python dict, tool["type"]) and
	// passes the others by reads the type below as a web search; Go's
	// decoder reads the last spelling, a client's bash tool. The Budget
	// read the bash tool, free, and the searches went unpriced.
	api := &searchingAPI{}
	api.fakeAPI = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var req struct{ Tools []map[string]any }
		n := 0
		if json.Unmarshal(body, &req) == nil {
			for _, tool := range req.Tools {
				if typ, _ := tool["type"].(string); strings.HasPrefix(typ, "web_search") {
					n = 5
				}
			}
		}
		api.billed.Add(int64(tokensBill + Money(n)*searchFee))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":%d}}}`, n)
	})
	limit := 12 * Cent
	b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: searchPrices})
	sendAll(t, api, b, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],`+
		`"tools":[{"type":"web_search_20250305","TYPE":"bash_20250124","name":"web_search"}]}`, 10)
	assert.LessOrEqual(t, Money(api.billed.Load()), limit, "the provider billed past the Limit")
}

func TestBudgetChargesCountedSearchesAtADatedKeysFee(t *testing.T) {
	// BudgetConfig.ToolPrices: "A key with a date prices that version
	// only." Priced so, the search tool Anthropic's SDK writes reserved its
	// five searches, but the searches the answer counted were charged at
	// the fee of "web_search", which has none: nothing.
	for _, format := range []searchingAnswer{searchesCounted, searchesStreamed} {
		api := newSearchingAPI(t, 5, format)
		limit := 12 * Cent
		b := newTestBudget(t, BudgetConfig{Limit: limit, ToolPrices: map[string]Money{"web_search_20250305": searchFee}})
		sendAll(t, api, b, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"news?"}],`+
			`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]}`, 10)
		assert.LessOrEqual(t, Money(api.billed.Load()), limit, "format %d: the provider billed past the Limit", format)
		assert.Equal(t, Money(api.billed.Load()), b.Spent(), "format %d: charged what the provider billed", format)
	}
}
