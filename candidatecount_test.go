package httpguard

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// litellmGeminiAPI is a loopback LiteLLM proxy in front of Gemini: a
// parameter OpenAI's API does not have goes to a provider that is not
// OpenAI-compatible as it is (add_provider_specific_params_to_optional_params
// in litellm/utils.py), and those GenerationConfig names
// (litellm/types/llms/vertex_ai.py) go into the request's generationConfig
// (_transform_request_body, litellm/llms/vertex_ai/gemini/transformation.py):
// "candidate_count" asks Gemini for that many candidates, each billed, as
// "n" does (which LiteLLM maps to candidate_count).
func litellmGeminiAPI(t *testing.T, billed *atomic.Int64) *fakeAPI {
	return litellmRun(t, billed, testPrices, func(t *testing.T, body []byte) (string, Usage) {
		var req struct {
			MaxTokens      int64 `json:"max_tokens"`
			N              int64 `json:"n"`
			CandidateCount int64 `json:"candidate_count"`
		}
		require.NoError(t, json.Unmarshal(body, &req))
		candidates := max(1, req.N)
		if req.CandidateCount > 0 {
			candidates = req.CandidateCount // merged over n's mapping
		}
		return "m", Usage{InputTokens: int64(len(body)), OutputTokens: candidates * req.MaxTokens}
	})
}

// Sent through LiteLLM to Gemini, "candidate_count": 8 with max_tokens
// 1,000 ran 8 candidates: priced as one ($0.0022), it was sent under a
// Limit of $0.01 and billed 8,000 output tokens, $0.0161.
func TestBudgetGeminiCandidateCountBehindLiteLLM(t *testing.T) {
	var billed atomic.Int64
	api := litellmGeminiAPI(t, &billed)
	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	body := `{"model":"m","max_tokens":1000,"candidate_count":8,"messages":[{"role":"user","content":"hello"}]}`
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	var refused *BudgetError
	require.True(t, errors.As(err, &refused), "8 candidates of 1,000 tokens do not fit $0.01: %v", err)
	assert.Equal(t, int64(8), refused.Choices)
	assert.Zero(t, api.hits.Load(), "refused, nothing sent")
	assert.LessOrEqual(t, Money(billed.Load()), Cent)

	var reserved atomic.Int64
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { reserved.Add(int64(s.Reserved)) }})
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, int64(Money(len(body))*1000+8*1000*2000), reserved.Load())
	assert.LessOrEqual(t, billed.Load(), reserved.Load())

	_, err = parseChatRequest([]byte(`{"model":"m","candidate_count":1,"candidate_count":8}`))
	assert.ErrorIs(t, err, errAmbiguousRequest, "a count given twice")
}
