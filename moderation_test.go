package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mistralModeration is Mistral's moderation model's price: $0.10 per
// million input tokens, billed at /v1/moderations (and /v1/chat/moderations).
var mistralModeration = Price{Input: 10 * Cent, Output: 0}

// Mistral bills its moderation endpoint, /v1/moderations, by the tokens of
// its input (relays serving it bill it too): only OpenAI's moderations are
// free. A table that prices the model is no use if the Budget lets every
// moderation pass unpriced.
func TestBudgetLimitHoldsAgainstBilledModerations(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		billed.Add(int64(mistralModeration.Cost(Usage{InputTokens: int64(len(body))})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"mod-1","model":"mistral-moderation-latest","results":[{"categories":{},"category_scores":{}}],"usage":{"prompt_tokens":%d,"completion_tokens":0,"total_tokens":%d}}`, len(body), len(body))
	})
	body := `{"model":"mistral-moderation-latest","input":["` + strings.Repeat("w", 30_000) + `"]}`
	b := newTestBudget(t, BudgetConfig{Limit: mistralModeration.Cost(Usage{InputTokens: int64(len(body))}) * 5 / 2,
		Prices: PriceTable{"mistral-moderation-latest": mistralModeration}})
	client := api.client(t, b)
	for range 10 {
		resp, err := client.Post(api.srv.URL+"/v1/moderations", "application/json", strings.NewReader(body))
		if err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
}

// OpenAI's moderations are free, and passed a Budget unread before it
// told them apart by model: an omni-moderation of an image sent inline (a
// base64 data URL of a few megabytes, as a phone's photo is) must still
// pass, whatever MaxBufferedBody, as the README says free endpoints
// "always pass". The SDKs write "input" before "model".
func TestBudgetPassesALargeFreeModeration(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false}]}`))
	})
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	image := "data:image/jpeg;base64," + strings.Repeat("QUJD", 5<<20/4) // 5 MiB
	body := `{"input":[{"type":"image_url","image_url":{"url":"` + image + `"}}],"model":"omni-moderation-latest"}`
	resp, err := api.client(t, b).Post(api.srv.URL+"/v1/moderations", "application/json", strings.NewReader(body))
	require.NoError(t, err, "a free moderation passes")
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.EqualValues(t, 1, api.hits.Load())

	// Its model is still read as servers read it: another's is priced,
	// and refused, as a body over MaxBufferedBody cannot be.
	for _, refused := range []string{
		strings.Replace(body, "omni-moderation-latest", "mistral-moderation-latest", 1),
		strings.Replace(body, `"model"`, `"Model"`, 1),
		strings.Replace(body, `{"input"`, `{"model":"mistral-moderation-latest","model":null,"input"`, 1),
		strings.Replace(body, `"omni-moderation-latest"`, `["omni-moderation-latest"]`, 1),
		body + "{}",
	} {
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/moderations", "application/json", strings.NewReader(refused))
		require.ErrorIs(t, err, ErrUnknownModel)
	}
	// A body without GetBody cannot be read twice: refused as before.
	req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/moderations", io.NopCloser(strings.NewReader(body)))
	require.NoError(t, err)
	_, err = api.client(t, b).Do(req)
	require.ErrorIs(t, err, ErrUnknownModel)
	require.EqualValues(t, 1, api.hits.Load())
}

// moderationModel reads a body a read at a time: keys and values split
// anywhere read as whole ones, with the decoders' rules.
func TestModerationModelReadsABodySplitAnywhere(t *testing.T) {
	for body, want := range map[string]string{
		`{"input":"hi","model":"omni-moderation-latest"}`:        "omni-moderation-latest",
		`{"m\u006fdel":"a","input":[{"model":"b"}],"model":"c"}`: "c",
		`{"input":"hi"}`:                                 "",
		`{"model":"text-moderation-stable"} `:            "text-moderation-stable",
		`{"model":"omni-moderation-latest","MODEL":"x"}`: "!",
		`{"model":"a","model":null}`:                     "!",
		`{"model":1}`:                                    "!",
		`{"model":"a"`:                                   "!",
		`["model"]`:                                      "!",
		`{"model":"` + strings.Repeat("x", maxModelValue) + `"}`:      "!",
		`{"input":"` + strings.Repeat("x", 70<<10) + `","model":"z"}`: "z",
	} {
		req := &http.Request{GetBody: func() (io.ReadCloser, error) {
			return io.NopCloser(iotest.OneByteReader(strings.NewReader(body))), nil
		}}
		model, ok := moderationModel(req)
		if want == "!" {
			assert.False(t, ok, "%.60s", body)
			continue
		}
		assert.True(t, ok, "%.60s", body)
		assert.Equal(t, want, model, "%.60s", body)
	}
}
