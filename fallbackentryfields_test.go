package httpguard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// litellmFallbacksAPI is a loopback LiteLLM proxy that walks a request's
// fallbacks as its router does (run_async_fallback): the request's model
// first, then each entry, whose fields (an object's) it updates the
// request's with, in place, so that an entry runs with the fields of the
// entries before it too. A model in down fails, unbilled; the first other
// runs and bills its prompt (a token a byte) and every token it may write:
// each candidate (the larger of n and best_of) of each prompt of a batch,
// up to the largest of max_tokens, max_completion_tokens and
// max_output_tokens; Claude, when none is set, the max_tokens LiteLLM
// gives a reasoning_effort's thinking budget.
func litellmFallbacksAPI(t *testing.T, prices PriceTable, down string, billed *atomic.Int64) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var kwargs map[string]any
		require.NoError(t, json.Unmarshal(body, &kwargs))
		if name, ok := strings.CutPrefix(r.URL.Path, "/engines/"); ok { // the engine runs it, whatever the body's model
			kwargs["model"] = strings.TrimSuffix(name, "/chat/completions")
		}
		fallbacks, _ := kwargs["fallbacks"].([]any)
		for _, entry := range append([]any{nil}, fallbacks...) {
			switch e := entry.(type) {
			case string:
				kwargs["model"] = e
			case map[string]any:
				for k, v := range e {
					kwargs[k] = v
				}
			}
			if kwargs["model"] == down {
				continue
			}
			count := func(keys ...string) (n int64) {
				for _, k := range keys {
					if v, ok := kwargs[k].(float64); ok {
						n = max(n, int64(v))
					}
				}
				return n
			}
			choices := max(1, count("n", "best_of"))
			if prompts, ok := kwargs["prompt"].([]any); ok {
				choices *= int64(len(prompts))
			}
			model := kwargs["model"].(string)
			output := choices * count("max_tokens", "max_completion_tokens", "max_output_tokens")
			if effort, ok := kwargs["reasoning_effort"].(string); ok && output == 0 && strings.Contains(model, "claude") {
				// LiteLLM's thinking budget for Claude, and max_tokens of it
				// plus DEFAULT_MAX_TOKENS (see litellmThinkingAPI)
				output = map[string]int64{"low": 1024, "medium": 2048, "high": 4096, "max": 16384}[effort] + 4096
			}
			billed.Add(int64(prices[model].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: output})))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"x","model":"%s-2025-01-01","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
				model, len(body), output)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
}

// Was a bug: LiteLLM runs a fallback given as an object with its fields
// over the request's, and its router updates the request's fields with
// each entry's in turn, in place, so that a later entry runs with an
// earlier one's max_tokens; an entry may also bound its output with
// max_output_tokens (the Responses API's) and ask for best_of candidates
// (legacy completions), and an entry's n is run for each prompt of a
// batch. The Budget read an entry's max_tokens, max_completion_tokens and
// n alone, for that entry alone, and its n once: each request below
// reserved a few cents, and the provider billed up to $2.50 against a
// Limit of $0.50. Nor did a fallback to Claude of a request with a
// reasoning_effort and no max_tokens reserve what LiteLLM runs it with
// (the effort's thinking budget plus 4,096: 20,480 tokens for "max"),
// unless the request's own model was Claude; nor did a request to an
// engine the path names, Claude, which LiteLLM runs whatever model the
// body names.
func TestBudgetLimitHoldsAgainstLiteLLMsFallbackEntries(t *testing.T) {
	prices := PriceTable{"cheap": {Input: 10 * Cent, Output: 40 * Cent}, "dear": {Input: 5 * Dollar, Output: 25 * Dollar},
		"claude-dear": {Input: 5 * Dollar, Output: 25 * Dollar}}
	for _, c := range []struct{ name, path, body string }{
		{"a reasoning_effort, falling back to Claude", "/v1/chat/completions",
			`{"model":"cheap","reasoning_effort":"max","fallbacks":["claude-dear"],"messages":[{"role":"user","content":"hi"}]}`},
		{"a reasoning_effort, to a Claude engine", "/engines/claude-dear/chat/completions",
			`{"model":"dear","reasoning_effort":"max","messages":[{"role":"user","content":"hi"}]}`},
		{"a reasoning_effort, to a Claude engine, no model", "/engines/claude-dear/chat/completions",
			`{"reasoning_effort":"max","messages":[{"role":"user","content":"hi"}]}`},
		{"an earlier entry's max_tokens", "/v1/chat/completions",
			`{"model":"cheap","max_tokens":10,"fallbacks":[{"model":"cheap","max_tokens":100000},{"model":"dear"}],"messages":[{"role":"user","content":"hi"}]}`},
		{"an earlier entry's max_tokens, then a name", "/v1/chat/completions",
			`{"model":"cheap","max_tokens":10,"fallbacks":[{"model":"cheap","max_tokens":100000},"dear"],"messages":[{"role":"user","content":"hi"}]}`},
		{"an entry's max_output_tokens", "/v1/responses",
			`{"model":"cheap","max_output_tokens":10,"fallbacks":[{"model":"dear","max_output_tokens":100000}],"input":"hi"}`},
		{"an entry's best_of", "/v1/completions",
			`{"model":"cheap","max_tokens":1000,"fallbacks":[{"model":"dear","best_of":100}],"prompt":"hi"}`},
		{"an entry's n, for each prompt", "/v1/completions",
			`{"model":"cheap","max_tokens":1000,"fallbacks":[{"model":"dear","n":10}],"prompt":["a","b","c","d","e","f","g","h","i","j"]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := litellmFallbacksAPI(t, prices, "cheap", &billed)
			b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent, Prices: prices})
			postOrRefused(t, api.client(t, b), api.srv.URL+c.path, c.body, 5, ErrBudgetExceeded, "")
			assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
		})
	}
}

// Was a bug: an entry of LiteLLM's fallbacks that sets a field the Budget
// prices a request by, other than its counts and speed, ran unpriced: a
// thinking budget (LiteLLM then runs Claude with max_tokens of the budget
// plus 4,096), Priority processing, output modalities, tools, extra_body,
// a stored prompt, fallbacks of its own. Such an entry is refused,
// unsent, as is an entry that names its model twice (a relay that keeps
// the first key runs the model the Budget did not price).
func TestBudgetRefusesFallbackEntriesItCannotPrice(t *testing.T) {
	prices := PriceTable{"cheap": {Input: 10 * Cent, Output: 40 * Cent}, "dear": {Input: 5 * Dollar, Output: 25 * Dollar},
		"claude-dear": {Input: 5 * Dollar, Output: 25 * Dollar}, "dear@priority": {Input: 10 * Dollar, Output: 50 * Dollar}}
	for _, c := range []struct{ entry, says string }{
		{`{"model":"claude-dear","thinking":{"type":"enabled","budget_tokens":60000}}`, `an entry sets "thinking"`},
		{`{"model":"claude-dear","reasoning_effort":"high"}`, `an entry sets "reasoning_effort"`},
		{`{"model":"dear","service_tier":"priority"}`, `an entry sets "service_tier"`},
		{`{"model":"dear","Service_Tier":"priority"}`, `an entry sets "Service_Tier"`},
		{`{"model":"dear","modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"}}`, `an entry sets "modalities"`},
		{`{"model":"dear","tools":[{"type":"web_search"}]}`, `an entry sets "tools"`},
		{`{"model":"dear","extra_body":{"max_tokens":100000}}`, `an entry sets "extra_body"`},
		{`{"model":"dear","prompt_id":"p1"}`, `an entry sets "prompt_id"`},
		{`{"model":"cheap","fallbacks":["dear"]}`, `an entry sets "fallbacks"`},
		{`{"model":"dear","candidate_count":8,"previous_response_id":"resp_1"}`, `an entry sets "previous_response_id"`},
		{`{"model":"dear","model":"cheap"}`, `an entry names its "model" twice`},
	} {
		api := newFakeAPI(t, answerBound)
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices})
		body := `{"model":"cheap","max_tokens":10,"fallbacks":[` + c.entry + `],"messages":[{"role":"user","content":"hi"}]}`
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.ErrorIs(t, err, ErrUnknownModel, c.entry)
		assert.ErrorContains(t, err, c.says, c.entry)
		assert.Zero(t, api.hits.Load(), "refused unsent: %s", c.entry)
	}

	// The prompt's text, and fields no price depends on, pass.
	var reserved Money
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { reserved = s.Reserved }})
	body := `{"model":"cheap","max_tokens":10,"fallbacks":[{"model":"dear","messages":[{"role":"user","content":"again"}],"temperature":0.2}],"messages":[{"role":"user","content":"hi"}]}`
	readThrough(t, api, b, "/v1/chat/completions", body)
	assert.Equal(t, hopCost(body, prices["dear"], 10), reserved, "the dearest model, at the request's max_tokens")
}
