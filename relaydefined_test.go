package httpguard

import (
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// litellmRouterAPI is a loopback LiteLLM proxy whose request bodies may
// name what it runs besides their model: a "prompt_id" runs the prompt it
// stores under that id (its model, max_tokens and messages over the
// body's: LiteLLM's prompt management), and a "user_config" runs the
// request on a router the body defines, whose model_list maps the model
// named to another (client-side credentials). Either runs "big", billed
// 4,000 output tokens at its price.
func litellmRouterAPI(t *testing.T, billed *atomic.Int64) *fakeAPI {
	return litellmRun(t, billed, relayPrices, func(t *testing.T, body []byte) (string, Usage) {
		var req struct {
			Model      string          `json:"model"`
			MaxTokens  int64           `json:"max_tokens"`
			PromptID   *string         `json:"prompt_id"`
			UserConfig json.RawMessage `json:"user_config"`
		}
		require.NoError(t, json.Unmarshal(body, &req))
		if req.PromptID != nil || len(req.UserConfig) > 0 && string(req.UserConfig) != "null" {
			return "big", Usage{InputTokens: int64(len(body)), OutputTokens: 4_000}
		}
		return req.Model, Usage{InputTokens: int64(len(body)), OutputTokens: req.MaxTokens}
	})
}

var relayPrices = PriceTable{
	"small": {Input: Dollar / 10, Output: Dollar / 10},
	"big":   {Input: 100 * Dollar, Output: 100 * Dollar},
}

// Was a bug (the proxy hunt's, in the library): the Budget priced a
// request naming a relay's "prompt_id" or "user_config" by the body's
// model and max_tokens, which the relay replaces: priced at "small"'s
// price ($0.00001), it was sent under a Limit of a cent and billed
// "big"'s 4,000 output tokens ($0.40). Neither can be priced from the
// body: refused, unless exempt; a null one names nothing and passes.
func TestBudgetRefusesWhatARelayDefinesOutsideTheBody(t *testing.T) {
	var billed atomic.Int64
	api := litellmRouterAPI(t, &billed)
	b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: relayPrices})
	for _, body := range []string{
		`{"model":"small","max_tokens":10,"prompt_id":"welcome-v2","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"small","max_tokens":10,"user_config":{"model_list":[{"model_name":"small","litellm_params":{"model":"big"}}]},"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"small","max_tokens":10,"Prompt_Id":"welcome-v2","messages":[{"role":"user","content":"hi"}]}`,
	} {
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.ErrorIs(t, err, ErrUnknownModel, body)
	}
	assert.Zero(t, api.hits.Load(), "refused, nothing sent")
	assert.Zero(t, billed.Load())

	for _, body := range []string{
		`{"model":"small","max_tokens":10,"prompt_id":null,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"small","max_tokens":10,"user_config":null,"messages":[{"role":"user","content":"hi"}]}`,
	} {
		_, err := send(t, api.client(t, b), api.srv.URL, body)
		require.NoError(t, err, body)
	}
	assert.LessOrEqual(t, billed.Load(), int64(Cent), "within the Limit of what was billed")
}
