package httpguard

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flashImagePrices price google/gemini-2.5-flash-image as Google bills it,
// in dollars per million tokens: text 0.30 in, 2.50 out; the images it
// writes 30 (1,290 tokens, $0.039, an image).
const flashImagePrices = `{"google/gemini-2.5-flash-image": {"input": 0.3, "output": 2.5, "image_output": 30}}`

// gptImagePrices price gpt-image-1 as OpenAI bills it: text input 5, image
// input 10, image output 40 (its only output); and a model that also
// writes text, at 10 against 40 for its images.
const gptImagePrices = `{"gpt-image-1": {"input": 5, "output": 40, "image_input": 10},
 "gpt-image-text": {"input": 5, "output": 10, "image_input": 10, "image_output": 40}}`

func loadPrices(t *testing.T, table string) PriceTable {
	t.Helper()
	p, err := LoadPrices(strings.NewReader(table))
	require.NoError(t, err)
	return p
}

// Gemini 2.5 Flash Image bills the images it writes at $30 per million
// output tokens and its text at $2.50; OpenRouter serves it in the chat
// format (a request with "modalities": ["image", "text"]) and reports the
// image's tokens inside completion_tokens, as
// completion_tokens_details.image_tokens (as gpt-5-image's, $40 against
// $10 for text). Priced as text, an image was charged a twelfth of its
// bill, and the request reserved its max_tokens at the text price: the
// one answer billed 8 times its Limit.
func TestBudgetChargesImageOutputAtItsPrice(t *testing.T) {
	text := Price{Input: 30 * Cent, Output: 250 * Cent}
	const imageTokens, textTokens = 1_290, 20
	body := `{"model":"google/gemini-2.5-flash-image","modalities":["image","text"],"max_tokens":1400,` +
		`"messages":[{"role":"user","content":"Draw a red fox in the snow."}]}`
	var billed atomic.Int64
	s, limit := runAtItsReservation(t, BudgetConfig{Prices: loadPrices(t, flashImagePrices)},
		"/v1/chat/completions", body, &billed,
		func(w http.ResponseWriter, r *http.Request, b []byte, billed *atomic.Int64) {
			prompt := int64(len(b)) / 4
			billed.Add(int64(text.Cost(Usage{InputTokens: prompt, OutputTokens: textTokens})) + imageTokens*30_000) // $30 per million: 30,000 nano-dollars a token
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"gen-1","provider":"Google","model":"google/gemini-2.5-flash-image","object":"chat.completion","created":1,`+
				`"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Here it is.",`+
				`"images":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}}],`+
				`"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0},`+
				`"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":%d}}}`,
				prompt, imageTokens+textTokens, prompt+imageTokens+textTokens, imageTokens)
		})
	assert.Equal(t, Money(billed.Load()), s.Charged, "the Budget charged %v for an attempt the provider billed %v", s.Charged, Money(billed.Load()))
	assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider billed %v against a Limit of %v", Money(billed.Load()), limit)
}

func TestBudgetReservesImageOutputAtTheImagePrice(t *testing.T) {
	// 1,400 tokens of image output cost $0.042, above a $0.01 Limit;
	// priced as text they cost $0.0035, and the request went out.
	for _, modalities := range []string{`["image","text"]`, `["text","\u0069mage"]`, `["IMAGE"]`, `["image","audio"]`} {
		api := newFakeAPI(t, answerUsage(20, 1400))
		b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: loadPrices(t, flashImagePrices)})
		_, err := send(t, api.client(t, b), api.srv.URL,
			`{"model":"google/gemini-2.5-flash-image","modalities":`+modalities+`,"max_tokens":1400,"messages":[{"role":"user","content":"Draw a fox"}]}`)
		require.ErrorIs(t, err, ErrBudgetExceeded, modalities)
		assert.Zero(t, api.hits.Load(), "%s: the request must not reach the server", modalities)
		assert.Zero(t, b.Spent())
	}

	// A request that lists no outputs gets the model's default ones,
	// which for an image model are images: reserved at the image price,
	// as when it asks for them.
	for _, modalities := range []string{``, `"modalities":null,`} {
		api := newFakeAPI(t, answerUsage(20, 1400))
		b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: loadPrices(t, flashImagePrices)})
		_, err := send(t, api.client(t, b), api.srv.URL,
			`{"model":"google/gemini-2.5-flash-image",`+modalities+`"max_tokens":1400,"messages":[{"role":"user","content":"Draw a fox"}]}`)
		require.ErrorIs(t, err, ErrBudgetExceeded, modalities)
		assert.Zero(t, api.hits.Load(), "%q: the request must not reach the server", modalities)
	}

	// Without image output, the output is reserved at the text price.
	api := newFakeAPI(t, answerUsage(20, 1400))
	b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: loadPrices(t, flashImagePrices)})
	_, err := send(t, api.client(t, b), api.srv.URL,
		`{"model":"google/gemini-2.5-flash-image","modalities":["text"],"max_tokens":1400,"messages":[{"role":"user","content":"Describe a fox"}]}`)
	require.NoError(t, err)
	assert.Equal(t, (20*30+1400*250)*Cent/1_000_000, b.Spent())
}

// OpenAI's Images API answers gpt-image-1 with usage in the Responses
// format, without cached_tokens, and names the image tokens of its input
// (an edit's images, $10 per million against $5 for text) and of its
// output.
func TestBudgetChargesImagesAPITokensAtImagePrices(t *testing.T) {
	for _, c := range []struct {
		model, usage string
		bill         Money
	}{
		// 10 text and 40 image input tokens, 4,160 output tokens, all image.
		{"gpt-image-1", `{"total_tokens":4210,"input_tokens":50,"output_tokens":4160,"input_tokens_details":{"text_tokens":10,"image_tokens":40}}`,
			(10*500 + 40*1000 + 4160*4000) * Cent / 1_000_000},
		// The same input; 60 text and 4,160 image output tokens.
		{"gpt-image-text", `{"total_tokens":4270,"input_tokens":50,"output_tokens":4220,"input_tokens_details":{"text_tokens":10,"image_tokens":40},` +
			`"output_tokens_details":{"text_tokens":60,"image_tokens":4160}}`,
			(10*500 + 40*1000 + 60*1000 + 4160*4000) * Cent / 1_000_000},
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"usage":%s}`, c.usage)
		})
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadPrices(t, gptImagePrices)})
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/images/generations",
			strings.NewReader(`{"model":"`+c.model+`","prompt":"A red fox in the snow","n":1,"size":"1024x1024"}`))
		require.NoError(t, err)
		resp, err := api.client(t, b).Do(req)
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, c.bill, b.Spent(), "%s: charged what the provider bills", c.model)
	}
}

func TestLoadPricesReadsImagePrices(t *testing.T) {
	p := loadPrices(t, gptImagePrices)
	assert.Equal(t, Price{Input: 5 * Dollar, Output: 10 * Dollar, ImageInput: 10 * Dollar, ImageOutput: 40 * Dollar}, p["gpt-image-text"])

	_, err := LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "image_output": -30}}`))
	require.EqualError(t, err, `httpguard: prices: model "m": ImageOutput must be >= 0, got -$30.00`)
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "image_input": "x"}}`))
	require.Error(t, err)
	_, err = LoadPrices(strings.NewReader(`{"m": {"input": 1, "output": 1, "long_context": {"above": 10, "input": 2, "output": 2, "image_input": -1}}}`))
	require.Error(t, err)

	// Zero image prices mean the text prices, as a table written before
	// images were priced read.
	text := Price{Input: Dollar, Output: 2 * Dollar}
	u := Usage{InputTokens: 1000, ImageInputTokens: 600, OutputTokens: 500, ImageOutputTokens: 400}
	assert.Equal(t, text.Cost(Usage{InputTokens: 1000, OutputTokens: 500}), text.Cost(u))
	assert.Equal(t, text.reserveTokens(10, 20, 0), text.reserveTokens(10, 20, imageOutput))
	// A Priority price made of it by times keeps its image prices.
	assert.Equal(t, Price{Input: 15 * Dollar, Output: 30 * Dollar, ImageInput: 30 * Dollar, ImageOutput: 120 * Dollar}, p["gpt-image-text"].times(3))
}

func TestCostPricesImageTokens(t *testing.T) {
	p := Price{Input: Dollar, CachedInput: 10 * Cent, Output: 2 * Dollar, AudioInput: 40 * Dollar, AudioOutput: 80 * Dollar,
		ImageInput: 10 * Dollar, ImageOutput: 30 * Dollar}
	// Disjoint: 10 text, 30 cached, 20 audio, 40 image.
	assert.Equal(t, (10*100+30*10+20*4000+40*1000)*Cent/1_000_000,
		p.Cost(Usage{InputTokens: 100, CachedInputTokens: 30, AudioInputTokens: 20, ImageInputTokens: 40}))
	// 100 tokens, all cached and all image: priced as image, never both
	// discounted and subtracted from the text.
	assert.Equal(t, 100*1000*Cent/1_000_000, p.Cost(Usage{InputTokens: 100, CachedInputTokens: 100, ImageInputTokens: 100}))
	// 30 of the 20 audio and 50 image tokens must be among the 60 cached:
	// 30 cached text, 20 audio, 50 image.
	assert.Equal(t, (30*10+20*4000+50*1000)*Cent/1_000_000,
		p.Cost(Usage{InputTokens: 100, CachedInputTokens: 60, AudioInputTokens: 20, ImageInputTokens: 50}))
	// Output: 5 text, 10 audio, 15 image.
	assert.Equal(t, (5*200+10*8000+15*3000)*Cent/1_000_000, p.Cost(Usage{OutputTokens: 30, AudioOutputTokens: 10, ImageOutputTokens: 15}))
	// Long prompts are priced by LongContext's image prices.
	long := Price{Input: Dollar, Output: Dollar, LongContext: &LongContextPrice{Above: 50, Price: Price{Input: Dollar, Output: Dollar, ImageInput: 7 * Dollar}}}
	assert.Equal(t, (40*100+60*700)*Cent/1_000_000, long.Cost(Usage{InputTokens: 100, ImageInputTokens: 60}))
}

func TestObserveUsageReadsImageTokens(t *testing.T) {
	for _, c := range []struct {
		usage string
		want  Usage
		ok    bool
	}{
		// OpenRouter (chat): the image inside completion_tokens.
		{`{"prompt_tokens":12,"completion_tokens":1310,"total_tokens":1322,"prompt_tokens_details":{"cached_tokens":0},` +
			`"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":1290}}`,
			Usage{InputTokens: 12, OutputTokens: 1310, ImageOutputTokens: 1290}, true},
		// An image in the prompt (new-api's details, in its order).
		{`{"prompt_tokens":1817,"completion_tokens":3,"total_tokens":1820,"prompt_tokens_details":{"cached_tokens":0,"text_tokens":11,"audio_tokens":0,"image_tokens":1806}}`,
			Usage{InputTokens: 1817, OutputTokens: 3, ImageInputTokens: 1806}, true},
		// Reasoning left out of completion_tokens, counted in the total: read as
		// output, and the image tokens fit in it.
		{`{"prompt_tokens":12,"completion_tokens":20,"total_tokens":1322,"completion_tokens_details":{"image_tokens":1290}}`,
			Usage{InputTokens: 12, OutputTokens: 1310, ImageOutputTokens: 1290}, true},
		// OpenAI's Images API: the Responses format without cached_tokens.
		{`{"total_tokens":4210,"input_tokens":50,"output_tokens":4160,"input_tokens_details":{"text_tokens":10,"image_tokens":40}}`,
			Usage{InputTokens: 50, ImageInputTokens: 40, OutputTokens: 4160}, true},
		{`{"input_tokens":50,"output_tokens":4220,"output_tokens_details":{"text_tokens":60,"image_tokens":4160}}`,
			Usage{InputTokens: 50, OutputTokens: 4220, ImageOutputTokens: 4160}, true},
		// The Responses format, with cached_tokens.
		{`{"input_tokens":50,"input_tokens_details":{"cached_tokens":20,"image_tokens":30},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0}}`,
			Usage{InputTokens: 50, CachedInputTokens: 20, ImageInputTokens: 30, OutputTokens: 9}, true},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":null,"output_tokens_details":null}`, Usage{InputTokens: 5, OutputTokens: 2}, true},
		// The keys of two formats, each counting tokens (a relay's usage
		// type): each kind the larger count, the images too.
		{`{"prompt_tokens":5,"completion_tokens":2,"input_tokens":50,"output_tokens":30,"output_tokens_details":{"image_tokens":25}}`,
			Usage{InputTokens: 50, OutputTokens: 30, ImageOutputTokens: 25, mixed: true}, true},
		// Images above their total are a lie: the reservation is charged.
		{`{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"image_tokens":6}}`, Usage{}, false},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"image_tokens":3}}`, Usage{}, false},
		{`{"input_tokens":5,"output_tokens":2,"input_tokens_details":{"image_tokens":6}}`, Usage{}, false},
		{`{"input_tokens":5,"output_tokens":2,"output_tokens_details":{"image_tokens":3}}`, Usage{}, false},
		{`{"input_tokens":5,"input_tokens_details":{"cached_tokens":0,"image_tokens":6},"output_tokens":2}`, Usage{}, false},
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"image_tokens":-1}}`, Usage{}, false},
		// A key in another case: encoding/json's reading, the dearer, not ok.
		// As many of each kind as either reading counts (see coverBoth).
		{`{"prompt_tokens":5,"completion_tokens":2,"completion_tokens_details":{"Image_Tokens":1}}`, Usage{InputTokens: 5, OutputTokens: 3, ImageOutputTokens: 1}, false},
		{`{"input_tokens":5,"output_tokens":2,"output_tokens_details":3}`, Usage{}, false},
	} {
		_, rep := observe(t, "application/json", strings.NewReader(`{"usage":`+c.usage+`}`))
		assert.Equal(t, usageReport{1, c.want, c.ok}, rep, c.usage)
	}
	// A stream: a later chunk's 0 does not lower the image count.
	usage := `{"prompt_tokens":12,"completion_tokens":1310,"completion_tokens_details":{"image_tokens":1290}}`
	stream := "data: {\"choices\":[],\"usage\":" + usage + "}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1310,\"completion_tokens_details\":{\"image_tokens\":0}}}\n\n" +
		"data: [DONE]\n\n"
	_, rep := observe(t, "text/event-stream", strings.NewReader(stream))
	assert.Equal(t, usageReport{1, Usage{InputTokens: 12, OutputTokens: 1310, ImageOutputTokens: 1290}, true}, rep)
}

func TestParseChatRequestReadsImageOutput(t *testing.T) {
	body := func(extra string) string {
		return `{"model":"m",` + extra + `"max_tokens":10,"messages":[{"role":"user","content":"Draw a fox"}]}`
	}
	for _, c := range []struct {
		extra     string
		want      outputKinds
		ambiguous bool
	}{
		{``, 0, false},
		{`"modalities":["text"],`, outputsStated, false},
		{`"modalities":null,`, 0, false}, // the model's default outputs, as when absent
		{`"modalities":[],`, 0, false},   // states nothing: the model's default outputs
		{`"modalities":["image","text"],`, outputsStated | imageOutput, false},
		{`"modalities":["\u0069mage"],`, outputsStated | imageOutput, false},
		{`"modalities":["Image"],`, outputsStated | imageOutput, false}, // a lenient server may take it
		{`"modalities":["images"],`, outputsStated, false},
		{`"modalities":["image","audio"],`, outputsStated | imageOutput | audioOutput, false},
		{`"modalities":["image"],"audio":{"voice":"alloy"},`, outputsStated | imageOutput | audioOutput, false},
		{`"audio":{"voice":"alloy"},`, audioOutput, false},
		{`"modalities":["text"],"modalities":["image"],`, 0, true}, // some servers keep the first, some the last
		{`"modalities":["image"],"modalities":["text"],`, 0, true},
		{`"Modalities":["image"],`, 0, true},
		{`"modalities":["image"],"modalities":null,`, 0, true},
		{`"modalities":"image",`, 0, true},
	} {
		cr, err := parseChatRequest([]byte(body(c.extra)))
		if c.ambiguous {
			require.Error(t, err, c.extra)
			assert.True(t, errors.Is(err, errAmbiguousRequest), "%s: %v", c.extra, err)
			continue
		}
		require.NoError(t, err, c.extra)
		assert.Equal(t, c.want, cr.Outputs, c.extra)
	}
}

// The Images API answers with images alone (gpt-image-1.5: $32 per
// million image output tokens against $10 for text): its output is
// reserved at the image price, as speech's is at the audio price. Found by
// a review: reserved at the text price, a 4,000-token image was billed
// about 4 times its Limit.
func TestBudgetReservesTheImagesAPIOutputAtTheImagePrice(t *testing.T) {
	const imageTokens = 4000 // within DefaultOutputReserve
	prices := loadPrices(t, gptImagePrices)
	for _, path := range []string{"/v1/images/generations", "/v1/images/edits", "/v1/images/variations"} {
		body := `{"model":"gpt-image-text","prompt":"A red fox in the snow","n":1,"size":"1024x1024","quality":"high"}`
		var billed atomic.Int64
		s, limit := runAtItsReservation(t, BudgetConfig{Prices: prices}, path, body, &billed,
			func(w http.ResponseWriter, _ *http.Request, _ []byte, billed *atomic.Int64) {
				billed.Add(int64(prices["gpt-image-text"].Cost(Usage{InputTokens: 10, OutputTokens: imageTokens, ImageOutputTokens: imageTokens})))
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"usage":{"total_tokens":%d,"input_tokens":10,"output_tokens":%d,`+
					`"input_tokens_details":{"text_tokens":10,"image_tokens":0},"output_tokens_details":{"text_tokens":0,"image_tokens":%d}}}`,
					10+imageTokens, imageTokens, imageTokens)
			})
		assert.LessOrEqual(t, Money(billed.Load()), limit, "%s: the provider billed %v against a Limit of %v", path, Money(billed.Load()), limit)
		assert.Equal(t, Money(billed.Load()), s.Charged, path)
	}
}

// An empty modalities array lists no outputs: LiteLLM passes it to Gemini
// as an empty responseModalities, which protobuf cannot tell from one left
// out (a repeated field), so the model answers with its default outputs,
// images for Gemini 2.5 Flash Image. Read as stating text alone, it was
// reserved at the text price, and one answer of 1,400 image tokens ($0.042)
// passed a $0.01 Limit.
func TestBudgetReservesEmptyModalitiesAtTheImagePrice(t *testing.T) {
	api := newFakeAPI(t, answerUsage(20, 1400))
	b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: loadPrices(t, flashImagePrices)})
	_, err := send(t, api.client(t, b), api.srv.URL,
		`{"model":"google/gemini-2.5-flash-image","modalities":[],"max_tokens":1400,"messages":[{"role":"user","content":"Draw a fox"}]}`)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Zero(t, api.hits.Load(), "the request must not reach the server")
	assert.Zero(t, b.Spent())
}

// An Images API stream (stream: true, OpenAI's gpt-image models) ends with
// image_generation.completed (image_edit.completed for an edit), which
// carries the image and the request's usage. Was a bug: the Budget did not
// take that event for the stream's end, and charged every such stream its
// reservation (4,096 output tokens) even when it reported less: a
// low-quality image of 372 output tokens was charged 11 times its bill.
func TestBudgetChargesAnImagesStreamItsUsage(t *testing.T) {
	partial := "event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"b64_json\":\"" +
		strings.Repeat("iVBO", 50_000) + "\",\"partial_image_index\":0,\"created_at\":1,\"size\":\"1024x1024\",\"quality\":\"low\"}\n\n"
	usage := `{"total_tokens":422,"input_tokens":50,"output_tokens":372,"input_tokens_details":{"text_tokens":10,"image_tokens":40}}`
	for name, c := range map[string]struct{ path, typ string }{
		"generation": {"/v1/images/generations", "image_generation.completed"},
		"edit":       {"/v1/images/edits", "image_edit.completed"},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, partial)
				fmt.Fprintf(w, "event: %s\ndata: {\"type\":%q,\"b64_json\":\"%s\",\"created_at\":1,\"size\":\"1024x1024\",\"quality\":\"low\",\"usage\":%s}\n\n",
					c.typ, c.typ, strings.Repeat("iVBO", 100_000), usage)
			})
			var settled []Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadPrices(t, gptImagePrices),
				OnSettle: func(s Settlement) { settled = append(settled, s) }})

			readThrough(t, api, b, c.path, `{"model":"gpt-image-1","prompt":"A red fox in the snow","stream":true,"partial_images":1,"quality":"low"}`)

			require.Len(t, settled, 1)
			assert.True(t, settled[0].UsageKnown)
			assert.Equal(t, (10*500+40*1000+372*4000)*Cent/1_000_000, b.Spent(), "charged the usage the stream reported")
		})
	}
}

// The Images API answers with images alone, and its usage need not split
// its output (an image stream's image_generation.completed never does):
// output tokens without output_tokens_details are image tokens. Was a bug:
// they were priced at the text price, so gpt-image-text's 4,160 image
// tokens were charged a quarter of their bill ($10 per million against
// $40), after a reservation at the image price had let the request go.
func TestBudgetChargesImagesAPIOutputWithoutDetailsAsImages(t *testing.T) {
	usage := `{"total_tokens":4170,"input_tokens":10,"output_tokens":4160,"input_tokens_details":{"text_tokens":10,"image_tokens":0}}`
	for name, answer := range map[string]func(http.ResponseWriter){
		"json": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"usage":%s}`, usage)
		},
		"stream": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: image_generation.completed\ndata: {\"type\":\"image_generation.completed\",\"b64_json\":\"iVBORw0KGgo=\",\"usage\":%s}\n\n", usage)
		},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { answer(w) })
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadPrices(t, gptImagePrices)})

			readThrough(t, api, b, "/v1/images/generations", `{"model":"gpt-image-text","prompt":"A red fox in the snow","stream":`+
				strconv.FormatBool(name == "stream")+`}`)

			assert.Equal(t, (10*500+4160*4000)*Cent/1_000_000, b.Spent(), "charged what the provider bills")
		})
	}
}
