package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: openai-go resumes a background response's stream
// (Responses.GetStreaming) with a GET of /v1/responses/{id} whose body is
// {"stream":true}, a JSON body that names no model: the Budget refused it
// with ErrUnknownModel. A GET of a response the provider stored retrieves
// what the request that created it was charged for; it is not billed, and
// passes unpriced, as a GET without a body does.
func TestBudgetPassesTheRetrievalOfAStoredResponse(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	for _, path := range []string{"/v1/responses/resp_1", "/v1/responses/resp_1?starting_after=3", "/openai/v1/responses/resp_1"} {
		req, err := http.NewRequest(http.MethodGet, api.srv.URL+path, strings.NewReader(`{"stream":true}`))
		require.NoError(t, err)
		resp, err := api.client(t, b).Do(req)
		require.NoError(t, err, path)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.EqualValues(t, 3, api.hits.Load())
	assert.Zero(t, b.Spent())

	// A body sent by another method, or to another path, is priced.
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/v1/responses/resp_1"},
		{http.MethodGet, "/v1/responses"},
		{http.MethodGet, "/v1/chat/completions"},
		{http.MethodGet, "/v1/responses/"},
	} {
		req, err := http.NewRequest(r.method, api.srv.URL+r.path, strings.NewReader(`{"stream":true}`))
		require.NoError(t, err)
		_, err = api.client(t, b).Do(req)
		require.ErrorIs(t, err, ErrUnknownModel, r)
	}
	assert.EqualValues(t, 3, api.hits.Load())
}
