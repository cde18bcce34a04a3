package httpguard

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// litellmThinkingAPI is a loopback LiteLLM proxy in front of Claude: a
// request that enables thinking without max_tokens (or
// max_completion_tokens) runs with max_tokens set to budget_tokens plus
// DEFAULT_MAX_TOKENS, 4,096 (update_optional_params_with_thinking_tokens,
// litellm/llms/base_llm/chat/transformation.py; litellm/constants.py), and
// the model writes all of them, billed as output. A reasoning_effort
// enables thinking with LiteLLM's budget for it
// (AnthropicConfig._map_reasoning_effort, the
// DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET constants).
func litellmThinkingAPI(t *testing.T, billed *atomic.Int64) *fakeAPI {
	return litellmRun(t, billed, testPrices, func(t *testing.T, body []byte) (string, Usage) {
		var req struct {
			MaxTokens           int64  `json:"max_tokens"`
			MaxCompletionTokens int64  `json:"max_completion_tokens"`
			ReasoningEffort     string `json:"reasoning_effort"`
			Thinking            struct {
				Type         string `json:"type"`
				BudgetTokens int64  `json:"budget_tokens"`
			} `json:"thinking"`
		}
		require.NoError(t, json.Unmarshal(body, &req))
		if b, ok := map[string]int64{"minimal": 128, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}[req.ReasoningEffort]; ok {
			req.Thinking.Type, req.Thinking.BudgetTokens = "enabled", b
		}
		out := max(req.MaxTokens, req.MaxCompletionTokens)
		if out == 0 {
			out = 4096 // LiteLLM's default for Anthropic
			if req.Thinking.Type == "enabled" && req.Thinking.BudgetTokens > 0 {
				out = req.Thinking.BudgetTokens + 4096
			}
		}
		return "m", Usage{InputTokens: int64(len(body)), OutputTokens: out}
	})
}

// A request that enables Anthropic's extended thinking and sets no
// max_tokens runs behind LiteLLM with max_tokens = budget_tokens + 4,096:
// reserved at OutputReserve (4,096 tokens, $0.0082 at testPrices), it was
// sent under a Limit of $0.01 and billed 24,096 output tokens, $0.0483.
func TestBudgetThinkingBudgetWithoutMaxTokensBehindLiteLLM(t *testing.T) {
	var billed atomic.Int64
	api := litellmThinkingAPI(t, &billed)
	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	client := api.client(t, b)

	body := `{"model":"m","thinking":{"type":"enabled","budget_tokens":20000},"messages":[{"role":"user","content":"hello"}]}`
	_, err := send(t, client, api.srv.URL, body)
	require.Error(t, err, "a request LiteLLM runs with 24,096 output tokens does not fit $0.01")
	var refused *BudgetError
	require.True(t, errors.As(err, &refused))
	assert.Equal(t, int64(20000+4096), refused.OutputTokens)
	assert.Zero(t, api.hits.Load(), "refused, nothing sent")
	assert.LessOrEqual(t, Money(billed.Load()), Cent)

	// Under a Limit it fits, it is reserved at what LiteLLM runs: the
	// answer costs no more than its reservation.
	billed.Store(0)
	var settled atomic.Int64
	b = newTestBudget(t, BudgetConfig{Limit: Dollar / 10, OnSettle: func(s Settlement) { settled.Add(int64(s.Charged)) }})
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, billed.Load(), settled.Load())
	assert.Equal(t, billed.Load(), int64(reservation(body, 20000+4096)))

	// A thinking budget a max_tokens bounds changes nothing, and nor does
	// OutputReserve above budget_tokens + 4,096.
	b = newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err = send(t, api.client(t, b), api.srv.URL,
		`{"model":"m","max_tokens":30000,"thinking":{"type":"enabled","budget_tokens":20000},"messages":[]}`)
	require.NoError(t, err)
}

func TestThinkingBudgetIsReadAsLiteLLMRunsIt(t *testing.T) {
	for body, want := range map[string]int64{
		`{"model":"m","thinking":{"type":"enabled","budget_tokens":9000}}`:                   -(9000 + 4096),
		`{"model":"m","thinking":{"type":"enabled","Budget_Tokens":9000,"budget_tokens":1}}`: -(9000 + 4096), // the larger, as a lenient decoder may read it
		`{"model":"m","thinking":{"type":"enabled","budget_tokens":9000},"max_tokens":100}`:  100,
		`{"model":"m","thinking":{"type":"adaptive"}}`:                                       0,
		`{"model":"m","thinking":null}`:                                                      0,
	} {
		cr, err := parseChatRequest([]byte(body))
		require.NoError(t, err, body)
		assert.Equal(t, want, cr.MaxOutput, body)
	}
	_, err := parseChatRequest([]byte(`{"model":"m","thinking":{"budget_tokens":1024},"thinking":{"budget_tokens":60000}}`))
	assert.ErrorIs(t, err, errAmbiguousRequest, "gjson reads the first, encoding/json the last")
}

// LiteLLM turns a reasoning_effort sent to Claude into a thinking budget
// (1,024 for "low" up to 16,384 for "max"), and a request that sets no
// max_tokens then runs with that budget plus 4,096: "high" with 8,192
// output tokens. Reserved at OutputReserve (4,096 tokens, $0.0083), it was
// sent under a Limit of $0.01 and billed $0.0165.
func TestBudgetReasoningEffortWithoutMaxTokensBehindLiteLLM(t *testing.T) {
	var billed atomic.Int64
	api := litellmThinkingAPI(t, &billed)
	claude := PriceTable{"anthropic/claude-sonnet-4-5": testPrices["m"], "gpt-5": testPrices["m"]}
	b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: claude})
	body := `{"model":"anthropic/claude-sonnet-4-5","reasoning_effort":"high","messages":[{"role":"user","content":"hello"}]}`
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	var refused *BudgetError
	require.True(t, errors.As(err, &refused), "a request LiteLLM runs with 8,192 output tokens does not fit $0.01: %v", err)
	assert.Equal(t, int64(4096+4096), refused.OutputTokens)
	assert.Contains(t, err.Error(), "1 × 8192 output tokens from the thinking budget (thinking.budget_tokens, or LiteLLM's for reasoning_effort)")
	assert.Zero(t, api.hits.Load(), "refused, nothing sent")
	assert.LessOrEqual(t, Money(billed.Load()), Cent)

	for effort, out := range map[string]int{"minimal": 128 + 4096, "low": 1024 + 4096, "medium": 2048 + 4096, "xhigh": 8192 + 4096, "max": 16384 + 4096} {
		billed.Store(0)
		var settled atomic.Int64
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: claude, OnSettle: func(s Settlement) { settled.Add(int64(s.Reserved)) }})
		body := `{"model":"anthropic/claude-sonnet-4-5","reasoning_effort":"` + effort + `","messages":[]}`
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.NoError(t, err)
		assert.Equal(t, int64(reservation(body, out)), settled.Load(), effort)
		assert.Equal(t, billed.Load(), settled.Load(), effort)
	}

	// LiteLLM does so for Claude alone: another model's reasoning_effort
	// (OpenAI's reason within their output) keeps OutputReserve.
	cr, err := parseChatRequest([]byte(`{"model":"gpt-5","reasoning_effort":"high","messages":[]}`))
	require.NoError(t, err)
	assert.Zero(t, cr.MaxOutput, "gpt-5: OutputReserve")
	for _, model := range []string{"claude-opus-4-1", "anthropic.claude-3-7-sonnet-20250219-v1:0", "vertex_ai/Claude-Sonnet-4"} {
		cr, err := parseChatRequest([]byte(`{"model":"` + model + `","reasoning_effort":"low","messages":[]}`))
		require.NoError(t, err)
		assert.Equal(t, -int64(1024+4096), cr.MaxOutput, model)
	}
}
