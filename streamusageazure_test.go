package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// azureAnswer answers as Azure OpenAI does by its api-version: versions
// before 2024-08-01-preview refuse a stream_options member ("Unrecognized
// request argument supplied"); later ones stream the usage chunk it asks
// for.
func azureAnswer(w http.ResponseWriter, r *http.Request, body []byte) {
	version := r.URL.Query().Get("api-version")
	if strings.Contains(string(body), `"stream_options"`) && version < "2024-08-01" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n")
	if strings.Contains(string(body), `"include_usage":true`) {
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n")
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

// Was a bug: the Budget added stream_options.include_usage to every
// streaming request to an Azure OpenAI deployment, whose api-versions
// before 2024-08-01-preview (the GA 2024-02-01 and 2024-06-01 among them)
// refuse the member with a 400: every stream of a caller pinned to one
// failed. Such a request goes as it was sent, and is charged its
// reservation; a later api-version is asked for usage as before.
func TestBudgetAsksAnAzureStreamForUsageOnlyAtAnAPIVersionThatKnowsIt(t *testing.T) {
	body := `{"max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for version, asked := range map[string]bool{
		"2024-02-01":         false,
		"2024-06-01":         false,
		"2024-05-01-preview": false,
		"2024-08-01-preview": true,
		"2024-10-21":         true,
		"2025-04-01-preview": true,
	} {
		t.Run(version, func(t *testing.T) {
			api := newFakeAPI(t, azureAnswer)
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar, OnSettle: func(s Settlement) { got = s }})
			resp, err := api.client(t, b).Post(api.srv.URL+"/openai/deployments/m/chat/completions?api-version="+version,
				"application/json", strings.NewReader(body))
			require.NoError(t, err)
			stream, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", stream)
			assert.Equal(t, asked, strings.Contains(api.lastBody(), `"include_usage":true`), "asked for usage")
			assert.Equal(t, asked, got.UsageKnown, "its usage read")
			assert.NotContains(t, string(stream), `"usage":{`)
		})
	}
}

// The api-version is read as Azure reads it: the key in any case, escaped
// or not, among other parameters.
func TestBeforeStreamOptionsReadsTheAPIVersionAsAzureDoes(t *testing.T) {
	for q, want := range map[string]bool{
		"api-version=2024-06-01":             true,
		"API-Version=2024-02-15-preview":     true,
		"x=1&api-version=2023-05-15&y=2":     true,
		"api%2Dversion=2024%2D06%2D01":       true,
		"api-version=2024-10-21&api-version": false,
		"api-version=2024-08-01-preview":     false,
		"api-version=preview":                false,
		"api-version=latest":                 false,
		"api-version=":                       false,
		"apiversion=2024-06-01":              false,
		"":                                   false,
	} {
		assert.Equal(t, want, beforeStreamOptions(q), q)
	}
}
