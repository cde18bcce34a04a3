package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gptImage1Prices price gpt-image-1 as OpenAI bills it: $5 per million
// text input tokens, $10 image input, $40 image output.
const gptImage1Prices = `{"gpt-image-1": {"input": 5, "output": 40, "image_input": 10, "image_output": 40}}`

// tableBill is what a server billing gpt-image-1 by the guide's table
// bills an Images API body: for each of its n images, the table's tokens
// for its quality and size (the dearest, high and 1024x1536, when either
// is absent or auto: the model picks), plus 100 for each partial image;
// and a token of input per 4 bytes of body.
func tableBill(t *testing.T, body []byte) Usage {
	t.Helper()
	var r struct {
		N             int64  `json:"n"`
		Quality       string `json:"quality"`
		Size          string `json:"size"`
		PartialImages int64  `json:"partial_images"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	q := map[string]int{"low": imageLow, "medium": imageMedium, "high": imageHigh}
	s := map[string]int{"1024x1024": imageSquare, "1024x1536": imagePortrait, "1536x1024": imageLandscape}
	qi, ok := q[r.Quality]
	if !ok {
		qi = imageHigh
	}
	si, ok := s[r.Size]
	if !ok {
		si = imagePortrait
	}
	out := max(r.N, 1) * (gptImage1Tokens[qi][si] + partialImageTokens*r.PartialImages)
	return Usage{InputTokens: int64(len(body)) / 4, OutputTokens: out, ImageOutputTokens: out}
}

// The Images API takes no max_tokens, and a high-quality gpt-image-1 image
// of 1024x1536 is 6,240 output tokens: reserved at the default
// OutputReserve (4,096 tokens an image), concurrent image requests passed
// the Limit by the difference, times n. Was a bug: with a $1 Limit, six
// such images went out at once, each reserving $0.16, and were billed
// $1.50.
func TestBudgetHoldsTheLimitForConcurrentImagesAtTheDefaultOutputReserve(t *testing.T) {
	prices := loadPrices(t, gptImage1Prices)
	bodies := []string{
		`{"model":"gpt-image-1","prompt":"A red fox in the snow","quality":"high","size":"1024x1536"}`,
		`{"model":"gpt-image-1","prompt":"A red fox in the snow"}`, // auto and auto: the dearest
		`{"model":"gpt-image-1","prompt":"A red fox in the snow","quality":"auto","size":"auto","n":2}`,
		`{"model":"gpt-image-1","prompt":"A red fox in the snow","quality":"high","size":"1536x1024","stream":true,"partial_images":3}`,
		`{"model":"gpt-image-1","prompt":"A red fox in the snow","quality":"high","n":3}`,
	}
	for _, path := range []string{"/v1/images/generations", "/v1/images/edits", "/v1/Images/Generations/"} {
		t.Run(path, func(t *testing.T) {
			const callers = 12
			var billed atomic.Int64
			var arrived, refused atomic.Int32
			release := make(chan struct{})
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/") {
					body = formAsJSON(t, body, ct)
				}
				u := tableBill(t, body)
				billed.Add(int64(prices["gpt-image-1"].Cost(u)))
				arrived.Add(1)
				<-release // every caller that fits is in flight at once
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"usage":{"total_tokens":%d,"input_tokens":%d,"output_tokens":%d,`+
					`"input_tokens_details":{"text_tokens":%d,"image_tokens":0}}}`,
					u.InputTokens+u.OutputTokens, u.InputTokens, u.OutputTokens, u.InputTokens)
			})
			limit := Dollar
			b := newTestBudget(t, BudgetConfig{Limit: limit, Prices: prices, MaxWait: -1})
			client := api.client(t, b)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body, ct := []byte(bodies[i%len(bodies)]), "application/json"
					if strings.Contains(path, "edits") && i%2 == 1 { // as the SDKs send an edit
						body, ct = jsonAsForm(t, body)
					}
					resp, err := client.Post(api.srv.URL+path, ct, bytes.NewReader(body))
					if err != nil {
						assert.ErrorIs(t, err, ErrBudgetExceeded)
						refused.Add(1)
						return
					}
					_, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}()
			}
			deadline := time.Now().Add(10 * time.Second)
			for arrived.Load()+refused.Load() < callers && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			close(release)
			wg.Wait()
			require.Positive(t, arrived.Load(), "some images are sent")
			assert.LessOrEqual(t, Money(billed.Load()), limit, "the provider billed %v against a Limit of %v", Money(billed.Load()), limit)
			assert.Equal(t, Money(billed.Load()), b.Spent(), "charged what the provider billed")
		})
	}
}

// A request that says its quality and size reserves that image's tokens,
// not the dearest: a low-quality square gpt-image-1 image is 272 output
// tokens ($0.01088 at $40 per million), and four of them fit in a 5 cent
// Limit. Reserved at the default OutputReserve, each needed $0.164.
func TestBudgetReservesALowQualityImageAtItsTokens(t *testing.T) {
	prices := loadPrices(t, gptImage1Prices)
	body := `{"model":"gpt-image-1","prompt":"A red fox","quality":"low","size":"1024x1024","n":4}`
	var billed atomic.Int64
	s, limit := runAtItsReservation(t, BudgetConfig{Prices: prices}, "/v1/images/generations", body, &billed,
		func(w http.ResponseWriter, _ *http.Request, b []byte, billed *atomic.Int64) {
			u := tableBill(t, b)
			billed.Add(int64(prices["gpt-image-1"].Cost(u)))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"created":1,"data":[],"usage":{"total_tokens":%d,"input_tokens":%d,"output_tokens":%d}}`,
				u.InputTokens+u.OutputTokens, u.InputTokens, u.OutputTokens)
		})
	assert.Equal(t, int64(272*4), tableBill(t, []byte(body)).OutputTokens)
	// The prompt's bound (a token a byte) is priced at the image input
	// price: an edit's images are image input.
	want := Money(int64(len(body))*10_000 + 4*272*40_000)
	assert.Equal(t, want, limit, "reserved four low-quality square images and the prompt, no more")
	assert.Equal(t, Money(billed.Load()), s.Charged)
	assert.LessOrEqual(t, Money(billed.Load()), limit)

	// Each quality and size reserves its own count.
	for _, c := range []struct {
		fields string
		tokens int64
	}{
		{`"quality":"low","size":"1024x1024"`, 272},
		{`"quality":"low","size":"1024x1536"`, 408},
		{`"quality":"low","size":"1536x1024"`, 400},
		{`"quality":"medium","size":"1024x1024"`, 1056},
		{`"quality":"medium","size":"1536x1024"`, 1568},
		{`"quality":"high","size":"1024x1024"`, 4160},
		{`"quality":"high"`, 6240},
		{`"quality":"low"`, 408},
		{`"size":"1024x1024"`, 4160},
		{`"quality":"auto","size":"auto"`, 6240},
		{`"quality":"LOW","size":"1024x1024"`, 4160},                  // read otherwise by some: the dearest
		{`"quality":"low","Quality":"high","size":"1024x1024"`, 4160}, // encoding/json reads the last
		{`"quality":"low","size":"1024x1024","partial_images":2`, 472},
		{`"quality":"low","size":"1024x1024","partial_images":"2"`, 272 + 1000},
	} {
		q := quoteImages(t, `{"model":"gpt-image-1","prompt":"x",`+c.fields+`}`)
		assert.Equal(t, c.tokens, q.output, c.fields)
	}
}

// quoteImages prices body as a request to /v1/images/generations with
// gpt-image-1's prices and a Limit it fits in.
func quoteImages(t *testing.T, body string) *quote {
	t.Helper()
	return quoteImagesWith(t, BudgetConfig{Limit: 1000 * Dollar, Prices: loadPrices(t, gptImage1Prices)}, body)
}

// quoteImagesWith prices body as a request to /v1/images/generations by a
// Budget of cfg.
func quoteImagesWith(t *testing.T, cfg BudgetConfig, body string) *quote {
	t.Helper()
	b := newTestBudget(t, cfg)
	req, err := http.NewRequest("POST", "http://api.example/v1/images/generations", strings.NewReader(body))
	require.NoError(t, err)
	var own pathFacts
	q := &quote{}
	require.NoError(t, b.price(q, req, false, readPath(req.URL, &own)))
	q.dropKept()
	return q
}

func TestImageOutputTokensForModelsWithoutATable(t *testing.T) {
	low := imageRequest{qualities: 1 << imageLow, sizes: 1 << imageSquare}
	assert.Equal(t, int64(272), imageOutputTokens("gpt-image-1", low, 4096, 500))
	assert.Equal(t, int64(272), imageOutputTokens("openai/gpt-image-1-2025-04-23", low, 4096, 500))
	assert.Equal(t, int64(272+4096), imageOutputTokens("gpt-image-1.5", low, 4096, 500), "its text output tokens: OutputReserve")
	assert.Equal(t, int64(687), imageOutputTokens("gpt-image-1-mini", low, 4096, 500))
	for _, m := range []string{"gpt-image-2", "gpt-image-2.5-flare", "dall-e-3", "gpt-image-1-max", "gpt-image-1-2025", "azure/gpt-image-1"} {
		assert.Equal(t, int64(500), imageOutputTokens(m, low, 4096, 500), m)
		assert.Equal(t, int64(50_000+300), imageOutputTokens(m, imageRequest{partials: 3}, 4096, 50_000), m)
	}
}

// A model without a table of its images' tokens reserves ImageReserve for
// each: by default 16,384 (or OutputReserve, the more), which a
// low-quality image of such a model takes a fraction of. Was a limit: no
// setting lowered it, and a $0.10 Limit refused one low-quality
// gpt-image-2 image billed some 300 output tokens ($0.009) for the
// $0.66 it reserved. With ImageReserve set to 400, four go out, and the
// Limit still holds against what the server bills.
func TestBudgetReservesImageReserveForAModelWithoutATable(t *testing.T) {
	const prices = `{"gpt-image-2": {"input": 5, "output": 40, "image_input": 10, "image_output": 40}}`
	const body = `{"model":"gpt-image-2","prompt":"A red fox","quality":"low","size":"1024x1024","n":4}`
	for _, c := range []struct {
		cfg   BudgetConfig
		image int64
	}{
		{BudgetConfig{}, untabledImageTokens},
		{BudgetConfig{OutputReserve: 20_000}, 20_000},
		{BudgetConfig{ImageReserve: 400}, 400},
		{BudgetConfig{ImageReserve: 400, OutputReserve: 20_000}, 400},
	} {
		c.cfg.Limit, c.cfg.Prices = 1000*Dollar, loadPrices(t, prices)
		q := quoteImagesWith(t, c.cfg, body)
		assert.Equal(t, c.image, q.output, "each image's tokens: %+v", c.cfg)
	}

	var billed atomic.Int64
	cfg := BudgetConfig{Prices: loadPrices(t, prices), ImageReserve: 400}
	s, limit := runAtItsReservation(t, cfg, "/v1/images/generations", body, &billed,
		func(w http.ResponseWriter, _ *http.Request, b []byte, billed *atomic.Int64) {
			u := Usage{InputTokens: int64(len(b)) / 4, OutputTokens: 4 * 300, ImageOutputTokens: 4 * 300}
			billed.Add(int64(cfg.Prices["gpt-image-2"].Cost(u)))
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"created":1,"data":[],"usage":{"total_tokens":%d,"input_tokens":%d,"output_tokens":%d}}`,
				u.InputTokens+u.OutputTokens, u.InputTokens, u.OutputTokens)
		})
	assert.Equal(t, Money(int64(len(body))*10_000+4*400*40_000), limit, "four images of 400 tokens and the prompt")
	assert.Less(t, limit, 10*Cent)
	assert.Equal(t, Money(billed.Load()), s.Charged)
	assert.LessOrEqual(t, Money(billed.Load()), limit)

	_, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: cfg.Prices, ImageReserve: -1})
	assert.EqualError(t, err, "httpguard: budget: ImageReserve must be >= 0, got -1")
}

// readImageRequest reads a body as a server that reads it with
// encoding/json would, or as asking for more: the reservation is never
// below what such a server bills.
func FuzzReadImageRequest(f *testing.F) {
	for _, s := range []string{
		`{"quality":"low","size":"1024x1024"}`, `{"Quality":"low","qUALITY":"medium"}`, `{"size":"1536x1024","partial_images":2}`,
		`{"qu\u0061lity":"low"}`, `{"partial_images":1e2}`, `{"partial_images":-1}`, `{"quality":null}`, `[]`, `{`, `{"size":{"a":1}}`,
		`{"\u017fize":"1024x1024"}`, `{"Size":"1536x1024"}`, `{"size":"1024x1024","SIZE":"1536x1024","quality":"low"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := readImageRequest(body)
		got := imageOutputTokens("gpt-image-1", r, 4096, untabledImageTokens)
		if got < 272 || got > 6240+maxPartialImages*partialImageTokens {
			t.Fatalf("%q: %d tokens", body, got)
		}
		var v struct {
			Quality, Size string
			PartialImages int64 `json:"partial_images"`
		}
		if json.Unmarshal(body, &v) != nil {
			return
		}
		read, err := json.Marshal(map[string]any{"quality": v.Quality, "size": v.Size, "partial_images": min(max(v.PartialImages, 0), maxPartialImages)})
		require.NoError(t, err)
		if want := tableBill(t, read).OutputTokens; got < want {
			t.Fatalf("%q: reserved %d tokens, encoding/json reads %d", body, got, want)
		}
		// As Python's json reads it: keys matched exactly, the last wins.
		var exact map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(body, &exact))
		m := map[string]any{}
		for _, k := range []string{"quality", "size"} {
			var s string
			if json.Unmarshal(exact[k], &s) == nil {
				m[k] = s
			}
		}
		var n int64
		if json.Unmarshal(exact["partial_images"], &n) == nil {
			m["partial_images"] = min(max(n, 0), maxPartialImages)
		}
		read, err = json.Marshal(m)
		require.NoError(t, err)
		if want := tableBill(t, read).OutputTokens; got < want {
			t.Fatalf("%q: reserved %d tokens, an exact reading reads %d", body, got, want)
		}
	})
}

// A refused image request says where its output bound came from.
func TestBudgetErrorSaysAnImageBoundComesFromQualityAndSize(t *testing.T) {
	api := newFakeAPI(t, func(http.ResponseWriter, *http.Request, []byte) {})
	b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: loadPrices(t, gptImage1Prices)})
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/images/generations", "application/json",
		strings.NewReader(`{"model":"gpt-image-1","prompt":"A red fox","n":2}`))
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Contains(t, err.Error(), "2 × 6240 output tokens for each image, from its model, quality and size")
	assert.Zero(t, api.hits.Load())
}

// An edit sent as JSON names its images by URL or file id: each is
// allowed more input tokens than gpt-image-1 bills an image at high input
// fidelity (65 + 4 × 129 for a 512×2048 image, plus 6,144), and they are
// billed at the image input price ($10 per million against $5 for text),
// at which the Images API's prompt is reserved. Was a bug: reserved at the
// text price, an edit's images could cost twice what was held for them.
func TestBudgetReservesAJSONEditsImagesAtTheImageInputPrice(t *testing.T) {
	const highFidelityImage = 65 + 4*129 + 6144
	for _, images := range []string{`[{"image_url":"https://example.com/fox.png"}]`, `[{"file_id":"file-abc"}]`} {
		body := `{"model":"gpt-image-1","prompt":"Add a hat","images":` + images + `,"input_fidelity":"high","quality":"low","size":"1024x1024"}`
		q := quoteImages(t, body)
		assert.GreaterOrEqual(t, q.chat.PromptTokens, int64(len(body))+highFidelityImage, images)
		assert.Equal(t, Money(q.chat.PromptTokens*10_000+272*40_000), q.reserve, images)
	}
}

// imageForm writes an Images API request as the SDKs send images.edit: a
// multipart form of the fields, in order, and of files, images of size
// bytes each.
func imageForm(t *testing.T, fields [][2]string, files []string, size int) (body []byte, contentType string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range fields {
		require.NoError(t, w.WriteField(f[0], f[1]))
	}
	for _, name := range files {
		fw, err := w.CreateFormFile(name, "fox.png")
		require.NoError(t, err)
		_, err = fw.Write(bytes.Repeat([]byte{0x89}, size))
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	return buf.Bytes(), w.FormDataContentType()
}

// formAsJSON is the JSON body with the fields of a multipart form (the
// first value of each, as Go's servers read it; n and partial_images as
// numbers), for tableBill; its files are left out.
func formAsJSON(t *testing.T, body []byte, contentType string) []byte {
	t.Helper()
	_, params, err := mime.ParseMediaType(contentType)
	require.NoError(t, err)
	form, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).ReadForm(1 << 20)
	require.NoError(t, err)
	defer form.RemoveAll()
	m := map[string]any{}
	for k, v := range form.Value {
		m[k] = v[0]
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
			m[k] = n
		}
	}
	j, err := json.Marshal(m)
	require.NoError(t, err)
	return j
}

// jsonAsForm is the JSON body as a multipart form of its fields, with an
// image to edit.
func jsonAsForm(t *testing.T, body []byte) ([]byte, string) {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	var fields [][2]string
	for k, v := range m {
		fields = append(fields, [2]string{k, fmt.Sprint(v)})
	}
	return imageForm(t, fields, []string{"image"}, 1000)
}

// OpenAI's SDKs send an edit (images.edit) as a multipart form, its images
// uploaded: such a request could not be priced, and the Budget refused it
// (ErrUnknownModel) unless BudgetConfig.Exempt let it through unpriced.
// It is priced as a JSON request is, its images' bytes left out of its
// prompt and each image (and the mask) reserved openAIImageTokenAllowance
// input tokens at the image input price, above what gpt-image-1 bills an
// image at high input fidelity (65 + 4 × 129 for a 512×2048 image, plus
// 6,144).
func TestBudgetPricesAMultipartImageEdit(t *testing.T) {
	prices := loadPrices(t, gptImage1Prices)
	const inputImage = 65 + 4*129 + 6144
	body, contentType := imageForm(t, [][2]string{{"model", "gpt-image-1"}, {"prompt", "Add a hat"}, {"quality", "low"},
		{"size", "1024x1024"}, {"n", "2"}, {"input_fidelity", "high"}}, []string{"image[]", "image[]", "mask"}, 200_000)
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, b []byte) {
		u := tableBill(t, formAsJSON(t, b, r.Header.Get("Content-Type")))
		u.InputTokens, u.ImageInputTokens = 20+3*inputImage, 3*inputImage
		billed.Add(int64(prices["gpt-image-1"].Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"created":1,"data":[],"usage":{"total_tokens":%d,"input_tokens":%d,"output_tokens":%d,"input_tokens_details":{"text_tokens":20,"image_tokens":%d}}}`,
			u.InputTokens+u.OutputTokens, u.InputTokens, u.OutputTokens, u.ImageInputTokens)
	})
	var settled Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices, OnSettle: func(s Settlement) { settled = s }})
	req, err := http.NewRequest("POST", api.srv.URL+"/v1/images/edits", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	resp, err := api.client(t, b).Do(req)
	require.NoError(t, err, "the edit is priced and sent")
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	text := int64(len(body) - 3*200_000)
	assert.Equal(t, Money((text+3*openAIImageTokenAllowance)*10_000+2*272*40_000), settled.Reserved,
		"its fields a token a byte, each file its allowance, at the image input price; two low-quality square images")
	assert.Equal(t, Money(billed.Load()), b.Spent(), "charged what the provider billed")
	assert.LessOrEqual(t, Money(billed.Load()), settled.Reserved)
}

// A form's fields are read as servers may read them: each value of a
// field sent twice (Go's servers read the first, Python's the last), a
// field in another case, and a value with a Content-Transfer-Encoding
// reserve the dearest reading; a model that servers may read differently
// is refused, as a Fallback refuses to map it.
func TestBudgetReadsAnImageFormAsServersMay(t *testing.T) {
	prices := loadPrices(t, gptImage1Prices)
	quoteForm := func(body []byte, contentType string) (*quote, error) {
		b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, Prices: prices})
		req, err := http.NewRequest("POST", "http://api.example/v1/images/edits", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", contentType)
		var own pathFacts
		q := &quote{}
		err = b.price(q, req, false, readPath(req.URL, &own))
		q.dropKept()
		return q, err
	}
	for _, c := range []struct {
		fields  [][2]string
		tokens  int64
		choices int64
	}{
		{[][2]string{{"quality", "low"}, {"size", "1536x1024"}}, 400, 1},
		{[][2]string{{"quality", "low"}, {"quality", "high"}, {"size", "1024x1024"}}, 4160, 1},
		{[][2]string{{"quality", "low"}, {"QUALITY", "medium"}, {"size", "1024x1024"}}, 1056, 1},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"n", "3"}, {"n", "5"}}, 272, 5},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"n", "two"}}, 272, maxImagesN},
		// Python's int(), which reads forms at OpenAI and LiteLLM, takes
		// digits grouped by underscores: a relay that allows n above 10
		// runs 20.
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"n", "2_0"}}, 272, 20},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"n", "+1_2"}}, 272, 12},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"n", "2__0"}}, 272, maxImagesN},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"partial_images", "2"}}, 472, 1},
		{[][2]string{{"quality", "low"}, {"size", "1024x1024"}, {"partial_images", "x"}}, 272 + 100*maxPartialImages, 1},
		{nil, 6240, 1},
	} {
		body, ct := imageForm(t, append([][2]string{{"model", "gpt-image-1"}, {"prompt", "x"}}, c.fields...), []string{"image"}, 10)
		q, err := quoteForm(body, ct)
		require.NoError(t, err, c.fields)
		assert.Equal(t, c.tokens, q.output, c.fields)
		assert.Equal(t, c.choices, q.chat.Choices, c.fields)
	}

	// A quality sent quoted-printable reads as unknown: the dearest.
	const boundary = "b0undary"
	part := func(h, v string) string { return "--" + boundary + "\r\n" + h + "\r\n\r\n" + v + "\r\n" }
	body := part(`Content-Disposition: form-data; name="model"`, "gpt-image-1") +
		part("Content-Disposition: form-data; name=\"quality\"\r\nContent-Transfer-Encoding: quoted-printable", "low") +
		part(`Content-Disposition: form-data; name="size"`, "1024x1024") + "--" + boundary + "--\r\n"
	q, err := quoteForm([]byte(body), "multipart/form-data; boundary="+boundary)
	require.NoError(t, err)
	assert.Equal(t, int64(4160), q.output)

	// Two models: refused, unsent.
	twice, ct := imageForm(t, [][2]string{{"model", "gpt-image-1"}, {"model", "gpt-image-2"}, {"quality", "low"}}, nil, 0)
	_, err = quoteForm(twice, ct)
	require.ErrorIs(t, err, ErrUnknownModel)
}

// parseImageForm never reads a form as asking for less than Go's
// multipart reader reads of it, first value or last.
func FuzzParseImageForm(f *testing.F) {
	const boundary = "b0undary"
	part := func(name, v string) string {
		return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + v + "\r\n"
	}
	end := "--" + boundary + "--\r\n"
	for _, s := range []string{
		part("model", "gpt-image-1") + part("quality", "low") + part("size", "1024x1024") + end,
		part("model", "gpt-image-1") + part("quality", "low") + part("quality", "high") + part("n", "2") + end,
		part("model", "gpt-image-1") + part("Size", "1536x1024") + part("partial_images", "3") + end,
		part("model", "gpt-image-1") + "--" + boundary + "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nPNG\r\n" + end,
		"--" + boundary + "\r\n\r\n\r\n" + end,
		// An empty filename: a value to Go's reader, a file to Python's.
		part("model", "gpt-image-1") + "--" + boundary + "\r\nContent-Disposition: form-data; name=\"n\"; filename=\"\"\r\n\r\n8\r\n" +
			"--" + boundary + "\r\nContent-Disposition: form-data; name=\"quality\"; filename=\"\"\r\n\r\nhigh\r\n" + part("quality", "low") + end,
		// A disposition Go's reader skips: no size to it.
		"--" + boundary + "\r\nContent-Disposition:0; nAme=\"size\"\r\n\r\n1024x1024\r\n--" + boundary + "--",
		// An n past the most a count reads as, and one past an int64's
		// range (read as 10, the most OpenAI takes, before).
		part("n", "1000000001") + end,
		part("n", "99999999999999999999") + end,
		part("n", "1_000_000_000_000_000_000_000") + end,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var cr chatRequest
		r, err := parseImageForm(body, boundary, &cr)
		if err != nil {
			return
		}
		if cr.Choices < 1 || cr.PromptTokens < 0 {
			t.Fatalf("%q: bad bounds %+v", body, cr)
		}
		got := imageOutputTokens("gpt-image-1", r, 4096, untabledImageTokens)
		form, err := multipart.NewReader(bytes.NewReader(body), boundary).ReadForm(1 << 20)
		if err != nil {
			return
		}
		defer form.RemoveAll()
		for _, pick := range []func([]string) string{func(v []string) string { return v[0] }, func(v []string) string { return v[len(v)-1] }} {
			m := map[string]any{}
			for _, k := range []string{"quality", "size"} {
				if v := form.Value[k]; len(v) > 0 {
					m[k] = pick(v)
				}
			}
			if v := form.Value["partial_images"]; len(v) > 0 {
				if n, err := strconv.ParseInt(pick(v), 10, 64); err == nil {
					m["partial_images"] = min(max(n, 0), maxPartialImages)
				}
			}
			read, err := json.Marshal(m)
			require.NoError(t, err)
			if want := tableBill(t, read).OutputTokens; got < want {
				t.Fatalf("%q: reserved %d tokens, Go's reader reads %d", body, got, want)
			}
			// n as a server reads it, one that reads integers of any
			// length (Python's int()) too, up to the most any count
			// reads as (maxUsageTokens, see ceilNumber).
			if v := form.Value["n"]; len(v) > 0 {
				n, err := strconv.ParseInt(strings.TrimSpace(pick(v)), 10, 64)
				if err == nil || errors.Is(err, strconv.ErrRange) {
					if n = min(n, maxUsageTokens); n > cr.Choices {
						t.Fatalf("%q: reserved %d images, a server reads %d", body, cr.Choices, n)
					}
				}
			}
		}
	})
}

// DALL·E bills per image and answers without usage: priced by a fee per
// request (Price.Request, its dearest image: dall-e-3 HD 1792x1024 is
// $0.12) and no token prices, each image reserves the fee, and the answer
// is charged its reservation.
func TestBudgetChargesADallERequestItsFeePerImage(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"created":1,"data":[{"url":"https://example.com/a.png"},{"url":"https://example.com/b.png"}]}`)
	})
	var settled Settlement
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: loadPrices(t, `{"dall-e-2": {"input": 0, "output": 0, "request": 0.12}}`),
		OnSettle: func(s Settlement) { settled = s }})
	readThrough(t, api, b, "/v1/images/generations", `{"model":"dall-e-2","prompt":"A red fox","n":2,"size":"1024x1024"}`)
	assert.Equal(t, 24*Cent, settled.Reserved)
	assert.Equal(t, 24*Cent, b.Spent())
}
