package httpguard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A workspace whose default inference geo is "us" runs requests that name
// none in the US, at 1.1 times the model's prices, and its answers say so
// in usage.inference_geo: they are charged at the "model@us" price
// (https://platform.claude.com/docs/en/manage-claude/data-residency: "Set
// through the inference_geo API parameter or as a workspace default").
func TestBudgetLimitHoldsAgainstAWorkspaceDefaultGeo(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billGeo(&billed, "us"))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-opus-4-6": opus46, "claude-opus-4-6@us": opus46US}})
	var bodies []string
	for i := range 40 {
		bodies = append(bodies, geoBody([]string{``, `"stream":true,`, `"inference_geo":"global",`}[i%3]))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}

// Without a "model@us" entry, such an answer is charged at twice the
// price it was reserved at: it was sent, and cannot be refused.
func TestBudgetChargesAnUnpricedWorkspaceDefaultGeoAtTwiceItsPrice(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billGeo(&billed, "us"))
	var got []Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-opus-4-6": opus46},
		OnSettle: func(s Settlement) { got = append(got, s) }})
	var bodies []string
	for i := range 40 {
		bodies = append(bodies, geoBody([]string{``, `"stream":true,`}[i%2]))
	}
	client := api.client(t, b)
	for _, body := range bodies {
		resp, err := client.Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
	}
	require.NotEmpty(t, got)
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit())
	for _, s := range got {
		require.True(t, s.UsageKnown)
		assert.Equal(t, opus46.times(2).Cost(s.Usage), s.Charged)
		assert.Equal(t, "claude-opus-4-6", s.PricedAs)
	}
}

func TestBudgetNamesTheGeoEntryThatPricedAnAnswer(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billGeo(&billed, "us"))
	var got Settlement
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: PriceTable{"claude-opus-4-6": opus46, "claude-opus-4-6@us": opus46US},
		OnSettle: func(s Settlement) { got = s }})
	readThrough(t, api, b, "/v1/messages", geoBody(``))
	assert.Equal(t, "claude-opus-4-6@us", got.PricedAs)
	assert.Equal(t, Money(billed.Load()), got.Charged)
}

func TestUsageReadsWhereAnAnswerRan(t *testing.T) {
	for body, want := range map[string]inferenceGeo{
		`{"usage":{"input_tokens":1,"output_tokens":1}}`:                           geoGlobal,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":"global"}}`:  geoGlobal,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":null}}`:      geoGlobal,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":"us"}}`:      geoUS,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":"\u0075s"}}`: geoUS,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":"eu"}}`:      geoOther,
		`{"usage":{"input_tokens":1,"output_tokens":1,"inference_geo":7}}`:         geoOther,
	} {
		_, rep := observe(t, "application/json", strings.NewReader(body))
		assert.True(t, rep.ok, body)
		assert.Equal(t, want, rep.u.ranIn, body)
	}
	// A key in another case is read by encoding/json and not by others.
	_, rep := observe(t, "application/json", strings.NewReader(`{"usage":{"input_tokens":1,"output_tokens":1,"Inference_Geo":"us"}}`))
	assert.False(t, rep.ok)
}

// billOpus bills each request its prompt bound and max_tokens at Opus
// 4.6's prices, adds that to billed, and has answer write the answer that
// reports it.
func billOpus(billed *atomic.Int64, answer func(w http.ResponseWriter, u Usage)) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		cr, err := parseChatRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: cr.MaxOutput}
		billed.Add(int64(opus46.Cost(u)))
		answer(w, u)
	}
}

// messageStartWithTopLevelUsage streams as Anthropic does, and puts in
// message_start, beside the message's usage that SDKs read, a top-level
// usage of zeros that no SDK reads for that event (a relay that gives
// every event a usage).
func messageStartWithTopLevelUsage(w http.ResponseWriter, u Usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"+
		"\"model\":\"claude-opus-4-6\",\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}},\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}\n\n", u.InputTokens)
	fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n", u.OutputTokens)
	fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
}

// anthropic-sdk-go takes message_start's usage from its message, and
// message_delta's from the top level: a data line holding both is charged
// the dearer of the two, not the one that comes last.
func TestBudgetLimitHoldsWhenMessageStartAlsoCarriesATopLevelUsage(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billOpus(&billed, messageStartWithTopLevelUsage))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-opus-4-6": opus46}})
	var bodies []string
	for range 40 {
		bodies = append(bodies, geoBody(`"stream":true,`))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}

// usageInBothFormats answers as Anthropic does, through a relay whose
// usage type holds the keys of both formats (as new-api's dto.Usage does,
// without omitempty): the counts it filled, input_tokens and
// output_tokens, and zeros for prompt_tokens, completion_tokens and
// total_tokens.
func usageInBothFormats(w http.ResponseWriter, u Usage) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"model":"claude-opus-4-6",`+
		`"usage":{"prompt_tokens":0,"completion_tokens":0,"input_tokens":%d,"output_tokens":%d,"total_tokens":0}}`, u.InputTokens, u.OutputTokens)
}

// anthropic-sdk-go reads input_tokens and output_tokens, openai-go
// prompt_tokens and completion_tokens: a usage holding both is charged the
// dearer reading, not the one format whose counts are zero.
func TestBudgetLimitHoldsAgainstAUsageInBothFormats(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billOpus(&billed, usageInBothFormats))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"claude-opus-4-6": opus46}})
	var bodies []string
	for range 40 {
		bodies = append(bodies, geoBody(``))
	}
	sendUntilTheLimit(t, api, b, "/v1/messages", bodies, &billed)
}

func TestUsageInBothFormatsReadsTheFormatThatCountsMore(t *testing.T) {
	for body, want := range map[string]Usage{
		// new-api's chat answer: the OpenAI counts, with their cached part.
		`{"usage":{"prompt_tokens":100,"completion_tokens":20,"input_tokens":0,"output_tokens":0,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":60}}}`: {
			InputTokens: 100, CachedInputTokens: 60, OutputTokens: 20},
		// Its Anthropic answer: the Anthropic counts, cache reads added.
		// (Its chat reading counts the 60 cache reads alone: mixed.)
		`{"usage":{"prompt_tokens":0,"completion_tokens":0,"input_tokens":40,"output_tokens":20,"cache_read_input_tokens":60,"total_tokens":0}}`: {
			InputTokens: 100, CachedInputTokens: 60, OutputTokens: 20, mixed: true},
		// Its Responses answer.
		`{"usage":{"prompt_tokens":0,"completion_tokens":0,"input_tokens":100,"output_tokens":20,"input_tokens_details":{"cached_tokens":60}}}`: {
			InputTokens: 100, CachedInputTokens: 60, OutputTokens: 20},
	} {
		_, rep := observe(t, "application/json", strings.NewReader(body))
		assert.True(t, rep.ok, body)
		assert.Equal(t, want, rep.u, body)
	}
}

// When both formats count tokens, neither reading is trusted over the
// other: the usage costs at least what either does, at any prices (each
// kind of token, uncached, cached, and so on, the larger count; see
// coverBoth). It was the reading of more tokens, which for 1,001 input
// tokens against 1,000 output ones was the cheaper.
func TestUsageInBothFormatsEachCountingCostsAtLeastEither(t *testing.T) {
	for body, want := range map[string]Usage{
		`{"usage":{"prompt_tokens":1001,"completion_tokens":0,"input_tokens":0,"output_tokens":1000}}`: {InputTokens: 1001, OutputTokens: 1000, mixed: true},
		// 10 or 70 uncached, 90 or 10 cached: 70 and 90.
		`{"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":90},"input_tokens":80,"output_tokens":20,"input_tokens_details":{"cached_tokens":10}}}`: {
			InputTokens: 160, CachedInputTokens: 90, OutputTokens: 20, mixed: true},
	} {
		_, rep := observe(t, "application/json", strings.NewReader(body))
		assert.True(t, rep.ok, body)
		assert.Equal(t, want, rep.u, body)
	}
}

// gpt4oMiniImageTokens is what OpenAI bills gpt-4o-mini for an image at
// high detail whose tiles are the most it cuts (768 × 2048 pixels after
// scaling, 2 × 4 tiles of 512): 2,833 tokens, and 5,667 per tile, so that
// an image costs it what it costs gpt-4o
// (https://platform.openai.com/docs/guides/images-vision#calculating-costs).
const gpt4oMiniImageTokens = 2_833 + 8*5_667

// billGPT4oMiniImages answers as OpenAI does for gpt-4o-mini, billing
// each image part of the request (chat's image_url, the Responses API's
// input_image, by URL or file_id) at gpt4oMiniImageTokens, besides the
// body's bytes as a bound of its text, and max_tokens (max_output_tokens)
// of output.
func billGPT4oMiniImages(billed *atomic.Int64) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		type message struct {
			Content []struct {
				Type string `json:"type"`
			} `json:"content"`
		}
		var req struct {
			MaxTokens       int64     `json:"max_tokens"`
			MaxOutputTokens int64     `json:"max_output_tokens"`
			Messages        []message `json:"messages"`
			Input           []message `json:"input"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: req.MaxTokens + req.MaxOutputTokens}
		for _, m := range append(req.Messages, req.Input...) {
			for _, part := range m.Content {
				if part.Type == "image_url" || part.Type == "input_image" {
					u.InputTokens += gpt4oMiniImageTokens
				}
			}
		}
		billed.Add(int64(ExamplePrices()["gpt-4o-mini"].Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/responses") {
			fmt.Fprintf(w, `{"object":"response","model":"gpt-4o-mini-2024-07-18","status":"completed","output":[],`+
				`"usage":{"input_tokens":%d,"output_tokens":%d}}`, u.InputTokens, u.OutputTokens)
			return
		}
		fmt.Fprintf(w, `{"object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, u.InputTokens, u.OutputTokens)
	}
}

// gpt-4o-mini bills an image up to 48,169 tokens, given by URL or (to
// the Responses API) by file_id: the allowance an image part reserves
// covers it either way.
func TestBudgetLimitHoldsAgainstGPT4oMiniImages(t *testing.T) {
	for _, c := range []struct{ path, part, body string }{
		{"/v1/chat/completions", `{"type":"image_url","image_url":{"url":"https://example.com/scan-%d.png","detail":"high"}}`,
			`{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":[{"type":"text","text":"What differs?"},%s]}]}`},
		{"/v1/responses", `{"type":"input_image","file_id":"file-%d","detail":"high"}`,
			`{"model":"gpt-4o-mini","max_output_tokens":100,"input":[{"role":"user","content":[{"type":"input_text","text":"What differs?"},%s]}]}`},
	} {
		t.Run(c.path, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, billGPT4oMiniImages(&billed))
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
			var parts []string
			for i := range 20 {
				parts = append(parts, fmt.Sprintf(c.part, i))
			}
			body := fmt.Sprintf(c.body, strings.Join(parts, ","))
			sendUntilTheLimit(t, api, b, c.path, slices.Repeat([]string{body}, 40), &billed)
		})
	}
}

// billOpenRouterFallback answers as OpenRouter does when the primary
// model is down: it serves the request with the first model of its
// "models" (or of its Anthropic-format "fallbacks"), names that model in
// the answer, and bills at that model's price
// (https://openrouter.ai/docs/guides/routing/model-fallbacks: "Requests
// are priced using the model that was ultimately used").
func billOpenRouterFallback(billed *atomic.Int64, prices PriceTable) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			Models    []string `json:"models"`
			Fallbacks []struct {
				Model string `json:"model"`
			} `json:"fallbacks"`
			MaxTokens int64 `json:"max_tokens"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		model := ""
		if len(r.Models) > 0 {
			model = r.Models[0]
		} else if len(r.Fallbacks) > 0 {
			model = r.Fallbacks[0].Model
		}
		u := Usage{InputTokens: int64(len(body)), OutputTokens: r.MaxTokens}
		billed.Add(int64(prices[model].Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, model, u.InputTokens, u.OutputTokens)
	}
}

// openRouterPrices prices a cheap primary and a dear fallback.
var openRouterPrices = PriceTable{"openai/gpt-4o-mini": ExamplePrices()["gpt-4o-mini"], "anthropic/claude-opus-4.6": opus46}

// OpenRouter's "models" (and "fallbacks") name models to serve a request
// when the one in "model" cannot, billed at their own prices: a request is
// reserved at the dearest.
func TestBudgetLimitHoldsAgainstOpenRouterFallbackModels(t *testing.T) {
	for _, fallbacks := range []string{`"models":["anthropic/claude-opus-4.6"],`, `"fallbacks":[{"model":"anthropic/claude-opus-4.6"}],`} {
		t.Run(fallbacks, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, billOpenRouterFallback(&billed, openRouterPrices))
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: openRouterPrices})
			body := `{"model":"openai/gpt-4o-mini",` + fallbacks + `"max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 2000) + `"}]}`
			var bodies []string
			for range 40 {
				bodies = append(bodies, body)
			}
			sendUntilTheLimit(t, api, b, "/api/v1/chat/completions", bodies, &billed)
		})
	}
}

func TestBudgetRefusesAFallbackModelItHasNoPriceFor(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billOpenRouterFallback(&billed, openRouterPrices))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"openai/gpt-4o-mini": ExamplePrices()["gpt-4o-mini"]}})
	for _, fallbacks := range []string{`"models":["openai/gpt-4o-mini","anthropic/claude-opus-4.6"],`, `"fallbacks":[{"model":"anthropic/claude-opus-4.6"}],`,
		`"fallbacks":["anthropic/claude-opus-4.6"],`} { // LiteLLM's, a list of names
		_, err := api.client(t, b).Post(api.srv.URL+"/api/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"openai/gpt-4o-mini",`+fallbacks+`"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
		require.ErrorIs(t, err, ErrUnknownModel, fallbacks)
		assert.ErrorContains(t, err, `"anthropic/claude-opus-4.6"`)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
}

// A fallback list servers would read differently, or not as a list of
// models, is refused rather than left unpriced.
func TestBudgetRefusesFallbackModelsItCannotRead(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, billOpenRouterFallback(&billed, openRouterPrices))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: openRouterPrices})
	for _, fallbacks := range []string{`"models":"anthropic/claude-opus-4.6",`, `"models":[1],`, `"Models":["anthropic/claude-opus-4.6"],`,
		`"fallbacks":[{"Model":"anthropic/claude-opus-4.6"}],`, `"fallbacks":{"model":"anthropic/claude-opus-4.6"},`, `"fallbacks":[{}],`} {
		_, err := api.client(t, b).Post(api.srv.URL+"/api/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"openai/gpt-4o-mini",`+fallbacks+`"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
		require.ErrorIs(t, err, ErrUnknownModel, fallbacks)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	for _, fallbacks := range []string{`"models":null,`, `"models":[],`, `"fallbacks":null,`, `"models":["openai/gpt-4o-mini"],`} {
		readThrough(t, api, b, "/api/v1/chat/completions", `{"model":"openai/gpt-4o-mini",`+fallbacks+`"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	}
}
