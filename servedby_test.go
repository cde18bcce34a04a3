package httpguard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A relay's own fallback, or a router such as openrouter/auto, serves a
// request with another model than the one it named, bills that model's
// prices, and says which model served in the answer's "model"
// (https://openrouter.ai/docs/guides/routing/model-fallbacks: "Requests
// are priced using the model that was ultimately used").

// servedModel is the dear model the relay below serves every request with.
const servedModel = "anthropic/claude-opus-4.6"

// answerFormats write an answer served by model, with usage u, in each of
// the formats the Budget reads.
var answerFormats = []struct {
	name, path string
	stream     bool
	write      func(w http.ResponseWriter, model string, u Usage)
}{
	{"chat", "/v1/chat/completions", false, func(w http.ResponseWriter, model string, u Usage) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, model, u.InputTokens, u.OutputTokens)
	}},
	{"chat stream", "/v1/chat/completions", true, func(w http.ResponseWriter, model string, u Usage) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 3 {
			fmt.Fprintf(w, "data: {\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":null}]}\n\n", model)
		}
		fmt.Fprintf(w, "data: {\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n",
			model, u.InputTokens, u.OutputTokens)
	}},
	{"anthropic stream", "/v1/messages", true, func(w http.ResponseWriter, model string, u Usage) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":%q,\"content\":[],\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}\n\n",
			model, u.InputTokens)
		fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n", u.OutputTokens)
		io.WriteString(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}},
	{"responses stream", "/v1/responses", true, func(w http.ResponseWriter, model string, u Usage) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":%q,\"status\":\"in_progress\",\"usage\":null}}\n\n", model)
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"model\":%q,\"status\":\"completed\",\"output\":[],"+
			"\"usage\":{\"input_tokens\":%d,\"output_tokens\":%d,\"total_tokens\":%d}}}\n\n", model, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens)
	}},
}

// serveWith answers every request with model, in format, and bills it at
// prices[model]: its prompt's bytes as tokens, and all of its max tokens.
func serveWith(billed *atomic.Int64, prices PriceTable, model string, write func(http.ResponseWriter, string, Usage)) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			MaxTokens       int64 `json:"max_tokens"`
			MaxOutputTokens int64 `json:"max_output_tokens"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: r.MaxTokens + r.MaxOutputTokens}
		billed.Add(int64(prices[model].Cost(u)))
		write(w, model, u)
	}
}

// answerRequest is a request for model in format, with a prompt of about
// 10,000 bytes and 1,000 tokens of output at most.
func answerRequest(t *testing.T, url, path string, stream bool, model string) *http.Request {
	prompt := strings.Repeat("word ", 2000)
	body := fmt.Sprintf(`{"model":%q,"stream":%v,"max_tokens":1000,"messages":[{"role":"user","content":%q}]}`, model, stream, prompt)
	if path == "/v1/responses" {
		body = fmt.Sprintf(`{"model":%q,"stream":%v,"max_output_tokens":1000,"input":%q}`, model, stream, prompt)
	}
	req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if path == "/v1/messages" {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	return req
}

// The Budget charges an answer at the prices of the model that served
// it, so that what it spent is what the relay billed, and it refuses once
// that reaches the Limit. The answer costs more than its reservation at
// the cheap model's prices: the provider may bill past the Limit by that
// answer (as doc.go says of every attempt that costs more than its
// reservation), never more.
func TestBudgetChargesTheModelAnAnswerSaysServedIt(t *testing.T) {
	for _, f := range answerFormats {
		t.Run(f.name, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, serveWith(&billed, openRouterPrices, servedModel, f.write))
			var settled []Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: openRouterPrices, OnSettle: func(s Settlement) { settled = append(settled, s) }})
			var reqs []*http.Request
			for range 40 {
				reqs = append(reqs, answerRequest(t, api.srv.URL, f.path, f.stream, "openai/gpt-4o-mini"))
			}
			opusCost := openRouterPrices[servedModel].Cost(Usage{InputTokens: 10_104, OutputTokens: 1000})
			sendRequestsUntilTheLimit(t, api, b, reqs, &billed, opusCost)
			require.NotEmpty(t, settled)
			assert.Equal(t, servedModel, settled[0].PricedAs)
			assert.Equal(t, "openai/gpt-4o-mini", settled[0].Model)
		})
	}
}

// An answer from a cheaper model, or from a model the table does not list
// (a dated snapshot of the model asked for), is charged at the prices of
// the model its request named: the reservation's side.
func TestBudgetChargesTheRequestsModelWhenTheServedOneIsCheaperOrUnlisted(t *testing.T) {
	for _, model := range []string{"openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18", ""} {
		t.Run(model, func(t *testing.T) {
			prices := PriceTable{"openai/gpt-4o-mini": ExamplePrices()["gpt-4o-mini"], servedModel: opus46}
			var billed atomic.Int64
			api := newFakeAPI(t, serveWith(&billed, PriceTable{model: opus46}, model, answerFormats[0].write))
			var settled Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, OnSettle: func(s Settlement) { settled = s }})
			resp, err := api.client(t, b).Do(answerRequest(t, api.srv.URL, "/v1/chat/completions", false, servedModel))
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, resp.Body)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, servedModel, settled.PricedAs)
			assert.Equal(t, opus46.Cost(settled.Usage), settled.Charged)
			assert.Equal(t, Usage{InputTokens: settled.Usage.InputTokens, OutputTokens: 1000}, settled.Usage, "the Settlement's Usage is a plain value")
		})
	}
}

func TestUsageReadsTheModelThatServedAnAnswer(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       modelHash
	}{
		{"plain", `{"model":"a","usage":{"prompt_tokens":1,"completion_tokens":1}}`, hashModel("a")},
		{"the last", `{"model":"a","usage":{"prompt_tokens":1,"completion_tokens":1},"model":"b"}`, hashModel("b")},
		{"escaped key", `{"\u006dodel":"a","usage":{"prompt_tokens":1,"completion_tokens":1}}`, hashModel("a")},
		{"another case", `{"Model":"a","usage":{"prompt_tokens":1,"completion_tokens":1}}`, 0},
		{"nested", `{"choices":[{"model":"a"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, 0},
		{"escaped value", `{"model":"\u0061","usage":{"prompt_tokens":1,"completion_tokens":1}}`, hashModel("a")},
		{"escaped slash", `{"model":"openai\/gpt-4.1","usage":{"prompt_tokens":1,"completion_tokens":1}}`, hashModel("openai/gpt-4.1")},
		{"not a string", `{"model":null,"usage":{"prompt_tokens":1,"completion_tokens":1}}`, 0},
		{"too long", `{"model":"` + strings.Repeat("a", maxModelValue) + `","usage":{"prompt_tokens":1,"completion_tokens":1}}`, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []int{1, 3, len(tt.body)} {
				var s jsonUsageScanner
				for p := []byte(tt.body); len(p) > 0; p = p[min(split, len(p)):] {
					s.write(p[:min(split, len(p))])
				}
				u, ok := s.result()
				require.True(t, ok)
				assert.Equal(t, tt.want, u.servedBy, "split every %d bytes", split)
			}
		})
	}
}

// A model the table has no entry for at the request's tier is charged
// its standard price times a bound on the tier's.
func TestBudgetChargesAServedModelWithoutTheRequestsTierAtABound(t *testing.T) {
	for _, tt := range []struct {
		tier   string
		factor int64
	}{
		{`"service_tier":"priority",`, unpricedPriorityFactor},
		{`"speed":"fast",`, unpricedFastFactor},
		{`"inference_geo":"us",`, unpricedGeoFactor},
		{``, 1},
	} {
		t.Run(tt.tier, func(t *testing.T) {
			cheap := ExamplePrices()["gpt-4o-mini"]
			prices := PriceTable{"cheap": cheap, "cheap@priority": cheap.times(2), "cheap@fast": cheap.times(6), "cheap@us": cheap.times(2), servedModel: opus46}
			var billed atomic.Int64
			api := newFakeAPI(t, serveWith(&billed, prices, servedModel, answerFormats[0].write))
			var settled Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, OnSettle: func(s Settlement) { settled = s }})
			body, err := io.ReadAll(answerRequest(t, api.srv.URL, "/v1/chat/completions", false, "cheap").Body)
			require.NoError(t, err)
			resp, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(strings.Replace(string(body), `{`, `{`+tt.tier, 1)))
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, resp.Body)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, opus46.times(tt.factor).Cost(settled.Usage), settled.Charged)
		})
	}
}
