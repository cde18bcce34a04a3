package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deferredAPI is a provider whose jobs, runs and background responses are
// answered at once, queued and without usage, and billed later on its side:
// each request to a job's path bills what the job goes on to spend.
func deferredAPI(t *testing.T, billed *atomic.Int64, bill func(path string, body []byte) Money) *fakeAPI {
	t.Helper()
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		billed.Add(int64(bill(r.URL.Path, body)))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"job_1","status":"queued","model":"m","usage":null}`)
	})
}

// A fine-tuning job is billed by the tokens of its training file, times its
// epochs, and an Assistants run by its thread's stored messages and every
// step it takes; both are answered queued, without usage. The body holds a
// model name and a file or thread ID: priced as a chat request of its few
// bytes, each was charged a chat reservation (about $0.008) for a bill of
// a dollar. So was a video (Sora's), billed by the second.
func TestBudgetLimitHoldsAgainstJobsBilledByWhatTheBodyDoesNotHold(t *testing.T) {
	for path, body := range map[string]string{
		"/v1/fine_tuning/jobs":      `{"model":"m","training_file":"file-abc","hyperparameters":{"n_epochs":3}}`,
		"/v1/threads/thread_1/runs": `{"assistant_id":"asst_1","model":"m"}`,
		"/v1/threads/runs":          `{"assistant_id":"asst_1","model":"m","thread":{"messages":[{"role":"user","content":"hi"}]}}`,
		// A video is billed by the second ($0.10 to $0.50 for Sora), queued:
		// priced by a "*" entry's tokens, it was charged a chat reservation.
		"/v1/videos":               `{"model":"m","prompt":"a cat","seconds":"12"}`,
		"/v1/videos/video_1/remix": `{"model":"m","prompt":"a dog"}`,
		// Relays serve the same jobs at /v1/video/generations (new-api's
		// video endpoint for Kling, Vidu and Sora).
		"/v1/video/generations": `{"model":"m","prompt":"a cat","seconds":"12"}`,
	} {
		t.Run(path, func(t *testing.T) {
			var billed atomic.Int64
			api := deferredAPI(t, &billed, func(string, []byte) Money {
				return testPrices["m"].Cost(Usage{InputTokens: 1_000_000}) // a training file, or a thread, of a million tokens
			})
			b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10})
			postOrRefused(t, api.client(t, b), api.srv.URL+path, body, 5, ErrUnknownModel, "BudgetConfig.Exempt")
			assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
		})
	}
}

// OpenAI's Realtime API spends outside any answer a Budget reads: over a
// WebSocket (GET /v1/realtime?model=…, an upgrade without a body), or with
// the key POST /v1/realtime/sessions (or client_secrets) mints for a
// browser. Neither can be priced, so neither passes unless exempted.
func TestBudgetRefusesTheRealtimeAPI(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"sess_1","object":"realtime.session","model":"m","client_secret":{"value":"ek_1"}}`)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	client := api.client(t, b)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/realtime/sessions", `{"model":"m","modalities":["audio","text"]}`},
		{"POST", "/v1/realtime/transcription_sessions", `{"model":"m"}`},
		{"GET", "/v1/realtime?model=m", ""},
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, api.srv.URL+c.path, body)
		require.NoError(t, err)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		_, err = client.Do(req)
		require.ErrorIs(t, err, ErrUnknownModel, c.path)
		assert.ErrorContains(t, err, "BudgetConfig.Exempt")
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")

	var asked atomic.Int32
	exempt := newTestBudget(t, BudgetConfig{Limit: Dollar, Exempt: func(*http.Request) bool { asked.Add(1); return true }})
	resp, err := api.client(t, exempt).Post(api.srv.URL+"/v1/realtime/sessions", "application/json", strings.NewReader(`{"model":"m"}`))
	require.NoError(t, err, "an exempt request passes")
	resp.Body.Close()
	assert.Equal(t, int32(1), asked.Load(), "Exempt is asked once a request")
}

// A background response ("background": true, OpenAI's Responses API) is
// answered queued, without usage, and runs and bills on the provider's
// side: it is charged its reservation, never its usage. Without
// max_output_tokens that reservation (OutputReserve) bounds nothing of a
// reasoning model's output.
func TestBudgetLimitHoldsAgainstBackgroundResponses(t *testing.T) {
	var billed atomic.Int64
	api := deferredAPI(t, &billed, func(_ string, body []byte) Money {
		cr, err := parseChatRequest(body)
		require.NoError(t, err)
		out := int64(50_000) // what the run goes on to write, up to max_output_tokens
		if cr.MaxOutput > 0 {
			out = min(out, cr.MaxOutput)
		}
		return testPrices["m"].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: out})
	})
	// A server that reads JSON as pydantic does takes a string or a number
	// for a boolean ("true", "yes", 1).
	for _, background := range []string{`true`, `"true"`, `"True"`, `"yes"`, `"on"`, `1`, `1.0`} {
		billed.Store(0)
		b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10})
		postOrRefused(t, api.client(t, b), api.srv.URL+"/v1/responses", `{"model":"m","background":`+background+`,"input":"think hard"}`, 5, ErrUnknownModel, "max_output_tokens")
		assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "background %s: the provider billed %v against a Limit of %v", background, Money(billed.Load()), b.Limit())
	}

	for _, body := range []string{
		`{"model":"m","background":true,"max_output_tokens":1000,"input":"think"}`, // its reservation bounds it
		`{"model":"m","background":false,"input":"think"}`,
		`{"model":"m","background":"false","input":"think"}`,
		`{"model":"m","background":0,"input":"think"}`,
		`{"model":"gpt-image-1","background":"transparent","prompt":"a cat"}`, // the Images API's background is a colour
	} {
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": testPrices["m"], "gpt-image-1": testPrices["m"]}})
		readThrough(t, api, b, "/v1/responses", body)
		assert.Positive(t, b.Spent(), body)
	}
}

// postOrRefused posts body to url n times, reading each answer whole; a
// request refused must be refused with want, saying what to do.
func postOrRefused(t *testing.T, client *http.Client, url, body string, n int, want error, says string) {
	t.Helper()
	for range n {
		resp, err := client.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			require.ErrorIs(t, err, want)
			assert.ErrorContains(t, err, says)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// A background response bounded by max_output_tokens still runs its server
// tools on the provider's side, and is charged the reservation of their
// calls alone: ToolCallReserve (10) searches, while a deep research run,
// which OpenAI runs in the background, makes a hundred. Unless
// max_tool_calls (or max_uses) bounds the calls, nothing bounds the bill.
func TestBudgetLimitHoldsAgainstTheToolCallsOfBackgroundResponses(t *testing.T) {
	const searchFee = Cent
	var billed atomic.Int64
	api := deferredAPI(t, &billed, func(_ string, body []byte) Money {
		cr, err := parseChatRequest(body)
		require.NoError(t, err)
		calls := int64(100)
		if cr.Tools != nil && cr.Tools.MaxToolCalls > 0 {
			calls = min(calls, cr.Tools.MaxToolCalls)
		}
		return testPrices["m"].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: cr.MaxOutput}) + Money(calls)*searchFee
	})
	newBudget := func() *Budget {
		// The searches return nothing billed here: ToolResultReserve reserves little.
		return newTestBudget(t, BudgetConfig{Limit: Dollar, ToolPrices: map[string]Money{"web_search": searchFee}, ToolResultReserve: 100})
	}
	b := newBudget()
	postOrRefused(t, api.client(t, b), api.srv.URL+"/v1/responses",
		`{"model":"m","background":true,"max_output_tokens":1000,"tools":[{"type":"web_search_preview"}],"input":"research"}`, 5, ErrUnknownModel, "max_tool_calls")
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())

	b = newBudget()
	readThrough(t, api, b, "/v1/responses", `{"model":"m","background":true,"max_output_tokens":1000,"max_tool_calls":20,"tools":[{"type":"web_search_preview"}],"input":"research"}`)
	assert.Positive(t, b.Spent(), "bounded calls are priced")
}

// OpenRouter's web plugin ("plugins": [{"id": "web"}]) bills $4 per 1,000
// results (max_results, 5 by default) besides the tokens, and its answer
// counts none of them: the Budget charged the tokens alone ($0.0008 spent
// of $2.00 billed against a $0.10 Limit). A plugin is a tool billed on the
// provider's side: refused without a fee in ToolPrices ("plugin_web", per
// result), and reserved its results with one.
func TestBudgetLimitHoldsAgainstOpenRouterPlugins(t *testing.T) {
	const perResult = 4 * Dollar / 1000
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		results := int64(5)
		if strings.Contains(string(body), `"max_results":25`) {
			results = 25
		}
		billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 10}) + Money(results)*perResult))
		answerUsage(20, 10)(w, nil, body)
	})
	for _, plugins := range []string{`[{"id":"web","max_results":25}]`, `[{"id":"web"}]`, `[{"id":"Web"}]`} {
		body := `{"model":"m","max_tokens":10,"plugins":` + plugins + `,"messages":[{"role":"user","content":"news?"}]}`
		billed.Store(0)
		b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10, ToolPrices: map[string]Money{"web_search": Cent}})
		_, err := api.client(t, b).Post(api.srv.URL+"/api/v1/chat/completions", "application/json", strings.NewReader(body))
		require.ErrorIs(t, err, ErrUnpricedTool, plugins)
		assert.ErrorContains(t, err, "plugin_web")

		// The results return nothing billed as input here: ToolResultReserve reserves a token each.
		b = newTestBudget(t, BudgetConfig{Limit: Dollar / 2, ToolPrices: map[string]Money{"plugin_web": perResult}, ToolResultReserve: 1})
		postOrRefused(t, api.client(t, b), api.srv.URL+"/api/v1/chat/completions", body, 20, ErrBudgetExceeded, "")
		assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "%s: the provider billed %v against a Limit of %v", plugins, Money(billed.Load()), b.Limit())
		assert.Positive(t, b.Spent())
	}
}

// A model slug ending in ":online" is OpenRouter's shorthand for its web
// plugin, billed as the plugin is, whatever the price table says of the
// model's tokens.
func TestBudgetPricesOpenRouterOnlineModelsAsTheWebPlugin(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := chatBody("m:online", 10)
	prices := PriceTable{"m:online": testPrices["m"]}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	_, err := api.client(t, b).Post(api.srv.URL+"/api/v1/chat/completions", "application/json", strings.NewReader(body))
	require.ErrorIs(t, err, ErrUnpricedTool)
	assert.ErrorContains(t, err, "plugin_web")

	const perResult = 4 * Dollar / 1000
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, ToolPrices: map[string]Money{"plugin_web": perResult}})
	readThrough(t, api, b, "/api/v1/chat/completions", body)
	assert.Equal(t, reservation(body, 10)+5*perResult, b.Spent(), "the tokens the answer reports and the 5 results reserved")
}

// Azure OpenAI runs a request on the deployment its path names
// (/openai/deployments/{name}/chat/completions), whatever model its body
// names: the Python SDK's AzureOpenAI client with azure_deployment set
// sends the caller's model in the body and the deployment in the path. A
// body naming gpt-4o-mini sent to a gpt-4o deployment was priced and
// charged at gpt-4o-mini's prices: $0.00075 charged of $0.0125 billed.
func TestBudgetPricesAnAzureRequestAtItsDeployment(t *testing.T) {
	prices := PriceTable{"gpt-4o-mini": {Input: 15 * Cent, Output: 60 * Cent}, "gpt-4o": {Input: 250 * Cent, Output: 1000 * Cent}}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		cr, err := parseChatRequest(body)
		require.NoError(t, err)
		deployment := strings.Split(r.URL.Path, "/")[3]
		billed.Add(int64(prices[deployment].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: cr.MaxOutput})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":"%s-2024-11-20","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
			deployment, len(body), cr.MaxOutput)
	})
	const path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
	b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10, Prices: prices})
	postOrRefused(t, api.client(t, b), api.srv.URL+path, chatBody("gpt-4o-mini", 1000), 20, ErrBudgetExceeded, "")
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
	assert.Equal(t, Money(billed.Load()), b.Spent())

	b = newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	readThrough(t, api, b, path, `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	assert.Positive(t, b.Spent(), "a body without a model is priced at its deployment's")

	_, err := api.client(t, b).Post(api.srv.URL+"/openai/deployments/my-prod/chat/completions?api-version=2024-10-21", "application/json", strings.NewReader(chatBody("gpt-4o-mini", 10)))
	require.ErrorIs(t, err, ErrUnknownModel, "an unpriced deployment")
	assert.ErrorContains(t, err, `"my-prod"`)
}

// OpenAI's speech endpoint answers with the audio alone, no usage, and
// bills gpt-4o-mini-tts's output as audio tokens ($12 per million; its
// text input $0.60): priced at the model's text output price, $0 in a
// table that lists its audio price apart, each speech was charged its
// input alone ($0.000025 for a speech billed $0.067).
func TestBudgetReservesSpeechAtTheAudioOutputPrice(t *testing.T) {
	p := Price{Input: 60 * Cent, Output: 0, AudioOutput: 12 * Dollar}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		billed.Add(int64(p.Cost(Usage{InputTokens: int64(len(body)), OutputTokens: 3000, AudioOutputTokens: 3000})))
		w.Header().Set("Content-Type", "audio/mpeg")
		io.WriteString(w, "ID3 mp3 frames")
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10, Prices: PriceTable{"gpt-4o-mini-tts": p}})
	postOrRefused(t, api.client(t, b), api.srv.URL+"/v1/audio/speech", `{"model":"gpt-4o-mini-tts","voice":"alloy","input":"Hello there, how are you today?"}`, 10, ErrBudgetExceeded, "")
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
}
