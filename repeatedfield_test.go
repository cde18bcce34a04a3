package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// firstKeyAPI is a loopback server that reads a body's top-level members
// as gjson and simdjson do, keeping the first of a repeated key, and runs
// and bills what it read: its model, or, when that is down, the first of
// its fallbacks; at Priority prices for a service_tier of "priority"; all
// of max_tokens for each prompt of a batch.
func firstKeyAPI(t *testing.T, prices PriceTable, down string, billed *atomic.Int64) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		first := map[string]json.RawMessage{}
		dec := json.NewDecoder(bytes.NewReader(body))
		_, err := dec.Token()
		require.NoError(t, err)
		for dec.More() {
			k, err := dec.Token()
			require.NoError(t, err)
			var v json.RawMessage
			require.NoError(t, dec.Decode(&v))
			if _, ok := first[k.(string)]; !ok {
				first[k.(string)] = v
			}
		}
		var model, tier string
		var fallbacks []string
		var prompts []json.RawMessage
		var maxTokens int64
		_ = json.Unmarshal(first["model"], &model)
		_ = json.Unmarshal(first["service_tier"], &tier)
		_ = json.Unmarshal(first["fallbacks"], &fallbacks)
		_ = json.Unmarshal(first["max_tokens"], &maxTokens)
		choices := int64(1)
		if json.Unmarshal(first["prompt"], &prompts) == nil && len(prompts) > 0 {
			choices = int64(len(prompts))
		}
		if model == down && len(fallbacks) > 0 {
			model = fallbacks[0]
		}
		if tier == "priority" {
			model += PriorityTier
		}
		output := choices * maxTokens
		billed.Add(int64(prices[model].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: output})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
			len(body), output)
	})
}

// Was a bug: a field whose value prices a request, given twice, was read
// as encoding/json and Python read it, the last value winning, but gjson
// and simdjson, in many Go relays and servers, keep the first: a
// service_tier of "priority" then "default" was reserved at standard
// prices and billed at Priority's, fallbacks to a dearer model then none
// reserved the cheaper model alone, and a batch of ten prompts then one
// reserved one. Such a body is refused, unsent, as a model or a count
// given twice already was.
func TestBudgetLimitHoldsAgainstAPricedFieldGivenTwice(t *testing.T) {
	prices := PriceTable{"cheap": {Input: 10 * Cent, Output: 40 * Cent}, "dear": {Input: 5 * Dollar, Output: 25 * Dollar},
		"dear@priority": {Input: 10 * Dollar, Output: 50 * Dollar}}
	for _, c := range []struct{ name, path, body, field string }{
		{"service_tier", "/v1/chat/completions",
			`{"model":"dear","max_tokens":10000,"service_tier":"priority","service_tier":"default","messages":[{"role":"user","content":"hi"}]}`, "service_tier"},
		{"fallbacks", "/v1/chat/completions",
			`{"model":"cheap","max_tokens":10000,"fallbacks":["dear"],"fallbacks":[],"messages":[{"role":"user","content":"hi"}]}`, "fallbacks"},
		{"a batch's prompts", "/v1/completions",
			`{"model":"dear","max_tokens":1000,"prompt":["a","b","c","d","e","f","g","h","i","j"],"prompt":"x"}`, "prompt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := firstKeyAPI(t, prices, "cheap", &billed)
			b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent, Prices: prices})
			postOrRefused(t, api.client(t, b), api.srv.URL+c.path, c.body, 4, ErrUnknownModel, `request field "`+c.field+`" given twice`)
			assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
			assert.Zero(t, api.hits.Load(), "refused unsent")
		})
	}
}
