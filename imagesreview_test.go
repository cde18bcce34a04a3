package httpguard

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quoteImageForm prices a multipart body, its parts cut at boundary, as a
// request to /v1/images/edits with gpt-image-1's prices.
func quoteImageForm(t *testing.T, body, boundary string) *quote {
	t.Helper()
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, Prices: loadPrices(t, gptImage1Prices)})
	req, err := http.NewRequest("POST", "http://api.example/v1/images/edits", bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	var own pathFacts
	q := &quote{}
	require.NoError(t, b.price(q, req, false, readPath(req.URL, &own)))
	q.dropKept()
	return q
}

// A form part with an empty filename (filename="") is a value to Go's
// multipart reader (Form.Value, FormValue: the Go relays, one-api and
// new-api, read an edit's fields so), a file to Python's. Was a bug: read
// as a file alone, its n, quality or size were not read, and the edit
// reserved one low-quality square image where Go's reader runs eight high
// ones.
func TestBudgetReadsAnImageFormFieldWithAnEmptyFilename(t *testing.T) {
	const boundary = "b0undary"
	part := func(disposition, v string) string {
		return "--" + boundary + "\r\nContent-Disposition: form-data; " + disposition + "\r\n\r\n" + v + "\r\n"
	}
	body := part(`name="model"`, "gpt-image-1") + part(`name="prompt"`, "Add a hat") +
		part(`name="n"; filename=""`, "8") + part(`name="quality"; filename=""`, "high") +
		part(`name="quality"`, "low") + part(`name="size"`, "1024x1024") +
		part(`name="image"; filename="fox.png"`, "PNG") + "--" + boundary + "--\r\n"

	form, err := multipart.NewReader(bytes.NewReader([]byte(body)), boundary).ReadForm(1 << 20)
	require.NoError(t, err)
	defer form.RemoveAll()
	require.Equal(t, []string{"8"}, form.Value["n"], "Go's reader reads n")
	require.Equal(t, []string{"high", "low"}, form.Value["quality"], "and the first quality is high")

	q := quoteImageForm(t, body, boundary)
	assert.Equal(t, int64(8), q.chat.Choices)
	assert.Equal(t, gptImage1Tokens[imageHigh][imageSquare], q.output)
}

// LiteLLM runs a fallback given as an object with the object's members
// over the request's (its Router updates the call's arguments with the
// entry: kwargs.update), so that an entry's quality, size, n and
// partial_images are what its model runs. Was a bug: the fallback was
// reserved at the request's own, one low-quality square image, and ran
// four high ones.
func TestBudgetReservesAnImageFallbackEntrysOwnFields(t *testing.T) {
	const top = `{"model":"gpt-image-1","prompt":"A red fox","quality":"low","size":"1024x1024",`
	for _, c := range []struct {
		fallbacks string
		tokens    int64
		choices   int64
	}{
		{`"fallbacks":[{"model":"gpt-image-1","quality":"high","n":4}]`, gptImage1Tokens[imageHigh][imageSquare], 4},
		{`"fallbacks":[{"model":"gpt-image-1","size":"1024x1536"}]`, gptImage1Tokens[imageLow][imagePortrait], 1},
		{`"fallbacks":[{"model":"gpt-image-1","Quality":"medium"}]`, gptImage1Tokens[imageMedium][imageSquare], 1},
		{`"fallbacks":[{"model":"gpt-image-1","partial_images":3}]`, gptImage1Tokens[imageLow][imageSquare] + 300, 1},
		{`"context_window_fallbacks":[{"model":"gpt-image-1","n":2.5}]`, gptImage1Tokens[imageLow][imageSquare], 3},
		{`"fallbacks":["gpt-image-1"]`, gptImage1Tokens[imageLow][imageSquare], 1},
	} {
		q := quoteImages(t, top+c.fallbacks+`}`)
		assert.Equal(t, c.tokens, q.output, c.fallbacks)
		assert.Equal(t, c.choices, q.chat.Choices, c.fallbacks)
	}
	// An entry's quality reads alongside the request's, never in place of
	// it: the request itself, which leaves it out, may be any quality.
	q := quoteImages(t, `{"model":"gpt-image-1","prompt":"x","size":"1024x1024","fallbacks":[{"model":"gpt-image-1","quality":"low"}]}`)
	assert.Equal(t, gptImage1Tokens[imageHigh][imageSquare], q.output)
}

// LiteLLM merges extra_body over the body it sends (the field the
// request reader refuses there, n among them, says so), so that an
// extra_body's quality or size is the one that runs. Was a bug: read from
// the top level alone, a request for a low-quality image whose extra_body
// asked for a high one reserved 272 tokens and ran 4,160.
func TestBudgetReservesAnImageRequestsExtraBodyQualityAndSize(t *testing.T) {
	const top = `{"model":"gpt-image-1","prompt":"A red fox","quality":"low","size":"1024x1024",`
	for _, c := range []struct {
		extra  string
		tokens int64
	}{
		{`"extra_body":{"quality":"high"}`, gptImage1Tokens[imageHigh][imageSquare]},
		{`"extra_body":{"size":"1024x1536"}`, gptImage1Tokens[imageLow][imagePortrait]},
		{`"extra_body":{"partial_images":2}`, gptImage1Tokens[imageLow][imageSquare] + 200},
		{`"extra_body":{"output_format":"webp"}`, gptImage1Tokens[imageLow][imageSquare]},
		{`"extra_body":null`, gptImage1Tokens[imageLow][imageSquare]},
	} {
		q := quoteImages(t, top+c.extra+`}`)
		assert.Equal(t, c.tokens, q.output, c.extra)
	}
}
