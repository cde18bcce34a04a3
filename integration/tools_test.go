package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Server tools through the SDKs: the Budget reads the tools each SDK
// writes and the counts each reads, and prices the calls at ToolPrices.

// searchBudget prices claude-sonnet-4-5 and gpt-4.1 and a web search at
// $0.01, under limit.
func searchBudget(t *testing.T, limit httpguard.Money) *httpguard.Budget {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"claude-sonnet-4-5": {"input": 3, "output": 15}, "gpt-4.1": {"input": 2, "output": 8}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: prices,
		ToolPrices: map[string]httpguard.Money{"web_search": httpguard.Cent}})
	require.NoError(t, err)
	return b
}

func TestAnthropicWebSearchIsChargedTheSearchesItMade(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		reply(w, http.StatusOK, strings.Replace(anthropicMessage, `"output_tokens":1}`,
			`"output_tokens":1,"server_tool_use":{"web_search_requests":2,"web_fetch_requests":0}}`, 1))
	})
	b := searchBudget(t, httpguard.Dollar)
	params := anthropicMessageParams()
	params.Tools = []anthropic.ToolUnionParam{{OfWebSearchTool20250305: &anthropic.WebSearchTool20250305Param{MaxUses: anthropic.Int(5)}}}

	got, err := newAnthropic(a, guardedClient(t, newRetrier(t, fastPolicy()), b)).Messages.New(context.Background(), params)

	require.NoError(t, err)
	assert.EqualValues(t, 2, got.Usage.ServerToolUse.WebSearchRequests)
	tokens := httpguard.Price{Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar}.Cost(httpguard.Usage{InputTokens: 5, OutputTokens: 1})
	assert.Equal(t, tokens+2*httpguard.Cent, b.Spent(), "two searches of the five reserved")
	assert.Contains(t, string(a.received()[0]), `"max_uses":5`)
}

// responseWithSearch is a Responses API answer that searched once: its
// output lists the call, its usage does not count it.
const responseWithSearch = `{"id":"resp_1","object":"response","created_at":1,"model":"gpt-4.1","status":"completed",` +
	`"output":[{"type":"web_search_call","id":"ws_1","status":"completed"},` +
	`{"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"hi","annotations":[]}]}],` +
	`"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":1,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":6}}`

func TestOpenAIGoResponsesWebSearchIsChargedTheSearchesItLists(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) { reply(w, http.StatusOK, responseWithSearch) })
	params := responses.ResponseNewParams{
		Model:           "gpt-4.1",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("news?")},
		MaxOutputTokens: openai.Int(16),
		MaxToolCalls:    openai.Int(3),
		Tools:           []responses.ToolUnionParam{responses.ToolParamOfWebSearch(responses.WebSearchToolTypeWebSearch)},
	}

	// Three searches ($0.03) do not fit in $0.02: nothing is sent.
	_, err := newOpenAIGo(a, guardedClient(t, searchBudget(t, 2*httpguard.Cent)), option.WithMaxRetries(0)).Responses.New(context.Background(), params)
	require.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.Zero(t, a.hits.Load())

	b := searchBudget(t, httpguard.Dollar)
	_, err = newOpenAIGo(a, guardedClient(t, b)).Responses.New(context.Background(), params)
	require.NoError(t, err)
	tokens := httpguard.Price{Input: 2 * httpguard.Dollar, Output: 8 * httpguard.Dollar}.Cost(httpguard.Usage{InputTokens: 5, OutputTokens: 1})
	assert.Equal(t, tokens+httpguard.Cent, b.Spent(), "the one search the output lists, of the three reserved")
	assert.Contains(t, string(a.received()[0]), `"max_tool_calls":3`)
}

func TestOpenAIGoToolWithoutAFeeIsRefused(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) { reply(w, http.StatusOK, responseWithSearch) })
	params := responses.ResponseNewParams{
		Model: "gpt-4.1",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("plot it")},
		Tools: []responses.ToolUnionParam{responses.ToolParamOfCodeInterpreter("cntr_1")},
	}
	_, err := newOpenAIGo(a, guardedClient(t, searchBudget(t, httpguard.Dollar)), option.WithMaxRetries(0)).Responses.New(context.Background(), params)
	require.ErrorIs(t, err, httpguard.ErrUnpricedTool)
	assert.Contains(t, fmt.Sprint(err), `tool "code_interpreter"`)
	assert.Zero(t, a.hits.Load())
}
