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

// A project whose default tier is Priority (set in OpenAI's dashboard)
// runs requests that do not ask for another tier ("auto", or none) at
// Priority prices, which only the answer shows: its "service_tier" says
// "priority". The Budget used to charge them at standard prices, 1.75
// times under what gpt-4.1's answers were billed.

// answerShape is how a priorityProject answers.
type answerShape int

const (
	chatJSON        answerShape = iota // a chat completion
	chatStream                         // its chunks, each saying the tier
	responsesEvents                    // Responses events: the response object says the tier
)

// priorityProject is a loopback OpenAI whose project's default tier is
// Priority: a request asking for "auto" or no tier runs at Priority, one
// asking for another tier at standard prices. It answers in shape, with
// usage of a quarter of the request's bytes as prompt tokens and half its
// max_tokens (or max_output_tokens), and adds to billed what it bills:
// at the tier it ran at, as its answer says, whether or not the answer
// carries its usage.
func priorityProject(t *testing.T, shape answerShape, billed *atomic.Int64) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			ServiceTier     string `json:"service_tier"`
			MaxTokens       int64  `json:"max_tokens"`
			MaxOutputTokens int64  `json:"max_output_tokens"`
			StreamOptions   struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		price, tier := ExamplePrices()["gpt-4.1"], "default"
		if r.ServiceTier == "" || r.ServiceTier == "auto" || r.ServiceTier == "priority" {
			price, tier = gpt41Priority, "priority"
		}
		u := Usage{InputTokens: int64(len(body)) / 4, OutputTokens: (r.MaxTokens + r.MaxOutputTokens) / 2}
		billed.Add(int64(price.Cost(u)))
		writeTierAnswer(w, shape, tier, u, r.StreamOptions.IncludeUsage)
	})
}

// writeTierAnswer writes an answer that ran at tier with usage u, in
// shape; a chat stream carries its usage only when includeUsage.
func writeTierAnswer(w http.ResponseWriter, shape answerShape, tier string, u Usage, includeUsage bool) {
	switch shape {
	case chatJSON:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4.1-2025-04-14",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d},"service_tier":%q,"system_fingerprint":"fp_1"}`, u.InputTokens, u.OutputTokens, tier)
	case chatStream:
		w.Header().Set("Content-Type", "text/event-stream")
		head := fmt.Sprintf(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4.1-2025-04-14","service_tier":%q,`, tier)
		for _, text := range []string{"o", "k", "!"} {
			fmt.Fprintf(w, "%s\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}],\"usage\":null}\n\n", head, text)
		}
		if includeUsage {
			fmt.Fprintf(w, "%s\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n", head, u.InputTokens, u.OutputTokens)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	case responsesEvents:
		w.Header().Set("Content-Type", "text/event-stream")
		// response.created echoes what the request asked for; the tier
		// that ran is in response.completed.
		io.WriteString(w, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"service_tier\":\"auto\",\"output\":[],\"usage\":null}}\n\n")
		io.WriteString(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"delta\":\"ok\"}\n\n")
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"service_tier\":%q,"+
			"\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"ok\"}]}],"+
			"\"usage\":{\"input_tokens\":%d,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":%d}}}\n\n", tier, u.InputTokens, u.OutputTokens)
	}
}

// tierRequest is a request in shape, with tier (a service_tier member and
// its comma, or nothing) and a prompt of about 10 KB.
func tierRequest(shape answerShape, tier string) (path, body string) {
	prompt := strings.Repeat("word ", 2000)
	switch shape {
	case chatStream:
		return "/v1/chat/completions", `{"model":"gpt-4.1","stream":true,` + tier + `"max_tokens":1000,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	case responsesEvents:
		return "/v1/responses", `{"model":"gpt-4.1","stream":true,` + tier + `"max_output_tokens":1000,"input":"` + prompt + `"}`
	}
	return "/v1/chat/completions", tierBody(tier)
}

var answerShapes = []struct {
	name  string
	shape answerShape
}{{"chat JSON", chatJSON}, {"chat stream", chatStream}, {"responses stream", responsesEvents}}

// The promise, for a Priority project: the provider never bills more than
// the Limit, and the Budget charges exactly what it bills.
func TestBudgetLimitHoldsWhenAnswersRunAtPriorityUnasked(t *testing.T) {
	prices := PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}
	for _, c := range answerShapes {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := priorityProject(t, c.shape, &billed)
			b := newTestBudget(t, BudgetConfig{Limit: 20 * Cent, Prices: prices})
			var bodies []string
			var path string
			for i := range 30 {
				var body string
				path, body = tierRequest(c.shape, []string{``, `"service_tier":"auto",`}[i%2])
				bodies = append(bodies, body)
			}
			sendUntilTheLimit(t, api, b, path, bodies, &billed)
		})
	}
}

// settleOne sends body to path on api through a Budget with prices and
// returns what it charged.
func settleOne(t *testing.T, api *fakeAPI, prices PriceTable, path, body string) Settlement {
	t.Helper()
	var got Settlement
	var settled int
	b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: prices, OnSettle: func(s Settlement) { got, settled = s, settled+1 }})
	readThrough(t, api, b, path, body)
	require.Equal(t, 1, settled)
	return got
}

func TestBudgetChargesAnAnswerThatRanAtPriorityAtThePriorityPrice(t *testing.T) {
	for _, c := range answerShapes {
		t.Run(c.name, func(t *testing.T) {
			var billed atomic.Int64
			api := priorityProject(t, c.shape, &billed)
			path, body := tierRequest(c.shape, `"service_tier":"auto",`)
			got := settleOne(t, api, PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}, path, body)
			require.True(t, got.UsageKnown)
			assert.Equal(t, Money(billed.Load()), got.Charged)
			assert.Equal(t, gpt41Priority.Cost(got.Usage), got.Charged)
			assert.Equal(t, "gpt-4.1@priority", got.PricedAs)

			// An unlisted model's Priority answer: "*@priority", as a request
			// asking for Priority finds it.
			billed.Store(0)
			got = settleOne(t, api, PriceTable{FallbackModel: ExamplePrices()["gpt-4.1"], FallbackModel + PriorityTier: gpt41Priority}, path, body)
			assert.Equal(t, Money(billed.Load()), got.Charged)
			assert.Equal(t, "*@priority", got.PricedAs)
		})
	}
}

// Without a Priority price for its model, an answer that ran at Priority
// was sent and cannot be refused: it is charged three times its standard
// price, above what OpenAI bills Priority (up to 2.5 times).
func TestBudgetChargesAnUnpricedPriorityAnswerThreeTimesItsStandardPrice(t *testing.T) {
	standard := ExamplePrices()["gpt-4.1"]
	for _, prices := range []struct {
		table    PriceTable
		pricedAs string // the standard entry
	}{
		{PriceTable{"gpt-4.1": standard}, "gpt-4.1"},
		{PriceTable{FallbackModel: standard}, FallbackModel},
		// A listed model is never priced by a "*" entry.
		{PriceTable{"gpt-4.1": standard, FallbackModel + PriorityTier: Price{Input: Cent, Output: Cent}}, "gpt-4.1"},
	} {
		for _, c := range answerShapes {
			var billed atomic.Int64
			api := priorityProject(t, c.shape, &billed)
			path, body := tierRequest(c.shape, ``)
			got := settleOne(t, api, prices.table, path, body)
			require.True(t, got.UsageKnown, c.name)
			assert.Equal(t, 3*standard.Cost(got.Usage), got.Charged, c.name)
			assert.GreaterOrEqual(t, got.Charged, Money(billed.Load()), c.name)
			assert.Equal(t, prices.pricedAs, got.PricedAs, c.name)
		}
	}
}

func TestPriceTimesMultipliesEveryPrice(t *testing.T) {
	p := Price{Input: 1, CachedInput: 2, CacheWrite: 3, CacheWrite1h: 4, Output: 5, AudioInput: 6, AudioOutput: 7, Request: 8,
		LongContext: &LongContextPrice{Above: 10, Price: Price{Input: 9, Output: 10}}}
	want := Price{Input: 3, CachedInput: 6, CacheWrite: 9, CacheWrite1h: 12, Output: 15, AudioInput: 18, AudioOutput: 21, Request: 24,
		LongContext: &LongContextPrice{Above: 10, Price: Price{Input: 27, Output: 30}}}
	assert.Equal(t, want, p.times(3))
	assert.Equal(t, Price{Input: 9, Output: 10}, p.LongContext.Price, "p is unchanged")
	u := Usage{InputTokens: 1000, CachedInputTokens: 100, OutputTokens: 50}
	standard := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar}
	assert.Equal(t, 3*standard.Cost(u), standard.times(3).Cost(u))
}

// ranAtAPI is a loopback OpenAI whose chat completions say they ran at
// tier.
func ranAtAPI(t *testing.T, tier string) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		writeTierAnswer(w, chatJSON, tier, Usage{InputTokens: 100, OutputTokens: 10}, false)
	})
}

// Only "priority" raises the price: other tiers (flex is billed below
// standard) are charged as the request's tier priced them.
func TestBudgetChargesOtherAnswerTiersAsTheRequestPricedThem(t *testing.T) {
	prices := PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}
	for _, tier := range []string{"default", "flex", "scale", "auto", "standard", "Priority", "priority ", "priority_batch", ""} {
		api := ranAtAPI(t, tier)
		got := settleOne(t, api, prices, "/v1/chat/completions", tierBody(``))
		require.True(t, got.UsageKnown, tier)
		assert.Equal(t, ExamplePrices()["gpt-4.1"].Cost(got.Usage), got.Charged, tier)
		assert.Equal(t, "gpt-4.1", got.PricedAs, tier)
	}

	// A request that asked for Priority stays priced at Priority when its
	// answer says it ran at the default tier (OpenAI then bills standard
	// prices: charged above, the safe side).
	api := ranAtAPI(t, "default")
	got := settleOne(t, api, prices, "/v1/chat/completions", tierBody(`"service_tier":"priority",`))
	assert.Equal(t, gpt41Priority.Cost(got.Usage), got.Charged)
	assert.Equal(t, "gpt-4.1@priority", got.PricedAs)
}

// Fast mode, billed above Priority, is not repriced by an answer that says
// "priority".
func TestBudgetKeepsAFastRequestsPriceWhateverItsAnswerSays(t *testing.T) {
	fast := Price{Input: 12 * Dollar, Output: 48 * Dollar}
	prices := PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority, "gpt-4.1" + FastTier: fast}
	api := ranAtAPI(t, "priority")
	got := settleOne(t, api, prices, "/v1/chat/completions", tierBody(`"speed":"fast",`))
	assert.Equal(t, fast.Cost(got.Usage), got.Charged)
	assert.Equal(t, "gpt-4.1@fast", got.PricedAs)
}

// An answer that said it ran at Priority and then broke off, or whose
// usage cannot be read, is charged its reservation at Priority prices.
func TestBudgetChargesALostPriorityAnswerItsPriorityReservation(t *testing.T) {
	body := tierBody(``)
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	for _, c := range []struct {
		name   string
		answer string
		ct     string
	}{
		{"cut stream", "data: {\"service_tier\":\"priority\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"o\"}}],\"usage\":null}\n\n", "text/event-stream"},
		{"malformed usage", `{"service_tier":"priority","usage":{"prompt_tokens":-5,"completion_tokens":1}}`, "application/json"},
		{"cut answer", `{"service_tier":"priority","choices":[`, "application/json"},
	} {
		for _, prices := range []struct {
			table PriceTable
			at    Price
		}{
			{PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"], "gpt-4.1" + PriorityTier: gpt41Priority}, gpt41Priority},
			{PriceTable{"gpt-4.1": ExamplePrices()["gpt-4.1"]}, ExamplePrices()["gpt-4.1"].times(unpricedPriorityFactor)},
		} {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", c.ct)
				io.WriteString(w, c.answer)
			})
			got := settleOne(t, api, prices.table, "/v1/chat/completions", body)
			require.False(t, got.UsageKnown, c.name)
			assert.Equal(t, prices.at.reserve(cr.PromptTokens, cr.MaxOutput, 0, 1), got.Charged, c.name)
			assert.Greater(t, got.Charged, got.Reserved, "%s: it held the standard reservation", c.name)
		}
	}
}

// tierOf reports whether observeUsage reads that an answer ran at
// Priority, the same in reads of every size.
func tierOf(t *testing.T, contentType, answer string) (priority bool) {
	t.Helper()
	_, whole := observe(t, contentType, strings.NewReader(answer))
	for size := 1; size < len(answer); size++ {
		_, rep := observe(t, contentType, chunked([]byte(answer), size))
		require.Equal(t, whole.u.ranAtPriority, rep.u.ranAtPriority, "%s in reads of %d", answer, size)
	}
	return whole.u.ranAtPriority
}

func TestObserveUsageReadsTheTierAJSONAnswerRanAt(t *testing.T) {
	const usage = `"usage":{"prompt_tokens":3,"completion_tokens":1}`
	for answer, want := range map[string]bool{
		`{"service_tier":"priority",` + usage + `}`:                           true,
		`{` + usage + `, "service_tier" : "priority" }`:                       true,
		`{"service_tier":"priorit\u0079",` + usage + `}`:                      true,
		`{"service_tier":"\u0070\u0072\u0069\u006f\u0072\u0069\u0074\u0079"}`: true,
		`{"servic\u0065_tier":"priority",` + usage + `}`:                      true,
		// encoding/json reads a key in another case: the dearer reading.
		`{"Service_Tier":"priority",` + usage + `}`:                 true,
		`{"ſervice_tier":"priority",` + usage + `}`:                 true,
		`{"service_tier":"priority","SERVICE_TIER":"default"}`:      true, // an exact decoder reads priority
		`{"service_tier":"default","SERVICE_TIER":"priority"}`:      true, // encoding/json does
		`{"service_tier":"priority","service_tier":null}`:           true, // encoding/json keeps it
		`{"service_tier":"priority","service_tier":1}`:              true,
		`{"service_tier":"default","service_tier":"priority"}`:      true,
		`{"service_tier":"priority",` + usage + `,"usage":{"x":1}}`: true, // usage spoilt, tier read
		// A later value replaces an earlier one in every decoder.
		`{"service_tier":"priority","service_tier":"default"}`: false,
		`{"service_tier":"default",` + usage + `}`:             false,
		`{"service_tier":"flex"}`:                              false,
		`{"service_tier":"scale"}`:                             false,
		`{"service_tier":"auto"}`:                              false,
		`{"service_tier":"Priority"}`:                          false,
		`{"service_tier":"priority "}`:                         false,
		`{"service_tier":["priority"]}`:                        false,
		`{"service_tier":null}`:                                false,
		`{"service_tier ":"priority"}`:                         false,
		`{"tier":"priority","x":{"service_tier":"priority"}}`:  false, // not top-level
		`{"choices":[{"service_tier":"priority"}]}`:            false,
		`{"x":"\"service_tier\":\"priority\""}`:                false,
		`{"service_tier":"` + strings.Repeat("p", 100) + `"}`:  false,
	} {
		assert.Equal(t, want, tierOf(t, "application/json", answer), answer)
	}
}

// A string too long to be "priority" that replaces one: encoding/json
// reads it, and the scanner, which does not keep it, keeps the dearer
// reading.
func TestObserveUsageKeepsPriorityPastALongServiceTier(t *testing.T) {
	answer := `{"SERVICE_TIER":"priority","Service_Tier":"` + strings.Repeat("x", 2*maxTierValue) + `"}`
	_, rep := observe(t, "application/json", chunked([]byte(answer), 40))
	assert.True(t, rep.u.ranAtPriority)
}

func TestObserveUsageReadsTheTierAStreamRanAt(t *testing.T) {
	chunk := func(tier string) string {
		return `data: {"id":"c","object":"chat.completion.chunk",` + tier + `"choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}` + "\n\n"
	}
	usage := `data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}` + "\n\ndata: [DONE]\n\n"
	p, d := chunk(`"service_tier":"priority",`), chunk(`"service_tier":"default",`)
	for stream, want := range map[string]bool{
		p + p + p + usage: true,
		d + d + p + usage: true, // a line that says Priority is enough
		p + d + d + usage: true,
		chunk(`"Service_tier":"priority",`) + usage:                       true,
		chunk(`"service_tier":"priorit\u0079",`) + usage:                  true,
		chunk(`"service_tier":"priority","service_tier":"auto",`) + usage: false,
		p + "data: {\"error\":{\"message\":\"overloaded\"}}\n\n":          true, // an error: usage not ok, tier read
		d + d + d + usage: false,
		chunk(`"x":{"service_tier":"priority"},`) + usage: false,
		usage + p:       true, // after [DONE]: it spoils the stream, and is read (the dearer reading)
		openAIStream:    false,
		responsesStream: false,
		strings.Replace(responsesStream, `"status":"completed",`, `"status":"completed","service_tier":"priority",`, 1):     true,
		strings.Replace(responsesStream, `"status":"in_progress",`, `"status":"in_progress","service_tier":"priority",`, 1): true,
		// The tier of a response object is its own.
		strings.Replace(responsesStream, `"type":"response.completed",`, `"type":"response.completed","x":{"service_tier":"priority"},`, 1): false,
	} {
		assert.Equal(t, want, tierOf(t, "text/event-stream", stream), stream)
	}
}

// Repeated lines are recognised without being lexed (see lineTemplate): a
// line that says Priority after lines that did not is still read.
func TestSSEScannerReadsAPriorityLineAfterRepeatedOnes(t *testing.T) {
	line := func(tier, text string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","service_tier":"` + tier + `","choices":[{"index":0,"delta":{"content":"` + text + `"}}],"usage":null}` + "\n\n"
	}
	var sb strings.Builder
	for i := range 50 {
		sb.WriteString(line("default", fmt.Sprint("t", i)))
	}
	sb.WriteString(line("priority", "last") + "data: [DONE]\n\n")
	for _, lexAll := range []bool{false, true} {
		r := readSSE([]byte(sb.String()), []int{300, 7, 4096}, lexAll)
		assert.True(t, r.u.ranAtPriority, "lexAll %v", lexAll)
	}
}

// The top-level keys read from answers are kept, when they span reads,
// even written with \u escapes; so is the longest "priority".
func TestEveryAnswerKeyFitsTheLexersKeyBufferEvenEscaped(t *testing.T) {
	for _, k := range answerKeys {
		assert.LessOrEqual(t, len(`\u0000`)*len(k), maxLexedKey, k)
	}
	assert.LessOrEqual(t, len(`"\u0070\u0072\u0069\u006f\u0072\u0069\u0074\u0079"`), maxTierValue)
}

// A chat stream's chunk says the tier it ran at as a JSON answer does, by
// the same rule (tierReading): an exact "service_tier" that an exact
// decoder reads as "priority" counts, whatever a key in another case after
// it says.
func TestObserveUsageReadsAStreamChunksTierAsAJSONAnswers(t *testing.T) {
	for _, members := range []string{
		`"service_tier":"priority","SERVICE_TIER":"default"`,
		`"service_tier":"priority","Service_Tier":"auto"`,
		`"SERVICE_TIER":"flex","service_tier":"priority","Service_tier":"default"`,
		`"service_tier":"default","SERVICE_TIER":"priority"`,
		`"service_tier":"priority","service_tier":"default"`,
		`"service_tier":"priority","service_tier":null`,
	} {
		answer := `{` + members + `,"usage":{"prompt_tokens":3,"completion_tokens":1}}`
		want := tierOf(t, "application/json", answer)
		stream := `data: {"object":"chat.completion.chunk",` + members + `,"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}` + "\n\ndata: [DONE]\n\n"
		assert.Equal(t, want, tierOf(t, "text/event-stream", stream), members)
	}
}
