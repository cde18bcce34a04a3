package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
