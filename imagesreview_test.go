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
