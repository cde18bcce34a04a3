package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: Portkey's gateway runs a request as its x-portkey-config
// header says: override_params (overrideParams) merge a model, max_tokens
// or n into the body, at the top or in any target of a fallback or a load
// balance, and a config's id ("pc-…") stands for a config held on
// Portkey's side. The Budget priced the body alone: a request for a cheap
// model that the config ran on a dear one, with a larger max_tokens, was
// billed past the Limit. Such a request is now refused, unsent, as
// LiteLLM's prompt_id and user_config are; a config that changes nothing
// the bill depends on (retries, a cache, a provider) passes.
func TestBudgetRefusesAPortkeyConfigThatRunsAnotherRequest(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	send := func(config string) error {
		req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("m", 10)))
		require.NoError(t, err)
		req.Header.Set("x-portkey-config", config)
		resp, err := api.client(t, b).Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	for _, config := range []string{
		`{"override_params":{"model":"gpt-4.1","max_tokens":100000}}`,
		`{"overrideParams":{"max_tokens":100000}}`,
		`{"strategy":{"mode":"fallback"},"targets":[{"provider":"openai"},{"provider":"anthropic","override_params":{"model":"claude-opus-4-1"}}]}`,
		`{"strategy":{"mode":"loadbalance"},"targets":[{"weight":1,"targets":[{"override\u005fparams":{"model":"o3"}}]}]}`,
		`{"OVERRIDE_PARAMS":{"model":"o3"}}`,
		`pc-abc123`,
		`{"retry":`,
		`[{"override_params":{"model":"o3"}}]`,
	} {
		err := send(config)
		require.ErrorIs(t, err, ErrUnknownModel, config)
		assert.ErrorContains(t, err, "x-portkey-config", config)
	}
	assert.Zero(t, api.hits.Load(), "refused unsent")

	for _, config := range []string{`{"retry":{"attempts":3,"on_status_codes":[429,500,502,503,504]}}`, `{"cache":{"mode":"simple"}}`, ` `} {
		require.NoError(t, send(config), config)
	}
	assert.EqualValues(t, 3, api.hits.Load())
}
