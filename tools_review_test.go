package httpguard

import (
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

func TestParseChatRequestRefusesARepeatedTools(t *testing.T) {
	for _, body := range []string{
		`{"tools":[{"type":"web_search_20250305"}],"tools":[{"name":"web_search"}]}`,
		`{"tools":[{"type":"web_search"}],"\u0074ools":[]}`,
	} {
		_, err := parseChatRequest([]byte(body))
		assert.ErrorIs(t, err, errAmbiguousRequest, body)
	}
}
