package httpguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cachedTokens is what the context cache litellmCacheAPI's requests name
// holds: a long document, stored on Gemini's side.
const cachedTokens = 500_000

// litellmCacheAPI is a loopback LiteLLM proxy in front of Gemini: a
// request's "cached_content" becomes the generateContent request's
// cachedContent (_transform_request_body,
// litellm/llms/vertex_ai/gemini/transformation.py), so that the model
// reads the context cache it names, whose tokens Gemini bills as cached
// input, and LiteLLM counts in prompt_tokens (the cached part in
// prompt_tokens_details.cached_tokens).
func litellmCacheAPI(t *testing.T, billed *atomic.Int64) *fakeAPI {
	return litellmRun(t, billed, testPrices, func(t *testing.T, body []byte) (string, Usage) {
		var req struct {
			CachedContent string `json:"cached_content"`
			MaxTokens     int64  `json:"max_tokens"`
		}
		require.NoError(t, json.Unmarshal(body, &req))
		var cached int64
		if req.CachedContent != "" {
			cached = cachedTokens
		}
		return "m", Usage{InputTokens: int64(len(body)) + cached, CachedInputTokens: cached, OutputTokens: req.MaxTokens}
	})
}

// litellmRun is a loopback LiteLLM proxy that runs each request as rule
// says (the model it runs and the usage it reports), bills that usage at
// prices into billed, and answers it, as LiteLLM reports it (the cached
// part of the prompt in prompt_tokens_details.cached_tokens).
func litellmRun(t *testing.T, billed *atomic.Int64, prices PriceTable, rule func(t *testing.T, body []byte) (model string, u Usage)) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		model, u := rule(t, body)
		billed.Add(int64(prices[model].Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d}}}`,
			model, u.InputTokens, u.OutputTokens, u.CachedInputTokens)
	})
}

// A request naming a Gemini context cache ("cached_content", which
// LiteLLM passes on) runs on input stored on Gemini's side, which its
// bytes do not bound: priced by its bytes ($0.0021), it was sent under a
// Limit of $0.01 and billed the cache's 500,000 tokens as cached input,
// $0.0521. It is input the provider stored, as a previous_response_id is:
// refused unless StoredInputReserve bounds it.
func TestBudgetGeminiCachedContentBehindLiteLLM(t *testing.T) {
	var billed atomic.Int64
	api := litellmCacheAPI(t, &billed)
	body := `{"model":"m","max_tokens":1000,"cached_content":"cachedContents/abc123","messages":[{"role":"user","content":"hello"}]}`

	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	_, err := send(t, api.client(t, b), api.srv.URL, body)
	require.ErrorIs(t, err, ErrUnknownModel, "input stored on the provider's side, unbounded")
	assert.Contains(t, err.Error(), "cached_content")
	assert.Zero(t, api.hits.Load(), "refused, nothing sent")

	b = newTestBudget(t, BudgetConfig{Limit: Cent, StoredInputReserve: 600_000})
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	var refused *BudgetError
	require.True(t, errors.As(err, &refused), "600,000 stored tokens do not fit $0.01: %v", err)
	assert.Zero(t, api.hits.Load())
	assert.LessOrEqual(t, Money(billed.Load()), Cent)

	var reserved atomic.Int64
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, StoredInputReserve: 600_000, OnSettle: func(s Settlement) { reserved.Add(int64(s.Reserved)) }})
	_, err = send(t, api.client(t, b), api.srv.URL, body)
	require.NoError(t, err)
	assert.LessOrEqual(t, billed.Load(), reserved.Load())

	// No cache named: nothing stored.
	for _, v := range []string{`null`, `""`} {
		cr, err := parseChatRequest([]byte(`{"model":"m","cached_content":` + v + `}`))
		require.NoError(t, err)
		assert.False(t, cr.StoredInput, v)
	}
}
