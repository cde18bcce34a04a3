package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// backgroundResponse is a Responses API answer in the background mode's
// status, with its usage.
func backgroundResponse(status, usage string) string {
	return `{"id":"resp_1","object":"response","created_at":1,"model":"gpt-4.1","status":"` + status +
		`","background":true,"output":[],"usage":` + usage + `}`
}

// Was a bug: openai-go resumes a background response's stream
// (Responses.GetStreaming) with a GET whose body is {"stream":true}; the
// Budget refused it, a body naming no model, with ErrUnknownModel. It is
// not billed: the request that created the response was charged its
// reservation, and nothing more is charged for reading it.
func TestOpenAIGoResumesABackgroundStreamThroughTheBudget(t *testing.T) {
	usage := `{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12}`
	var methods []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		methods = append(methods, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodPost {
			reply(w, http.StatusOK, backgroundResponse("queued", "null"))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":%s}\n\n",
			backgroundResponse("completed", usage))
	}))
	t.Cleanup(srv.Close)
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"gpt-4.1": {"input": 2, "output": 8}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices})
	require.NoError(t, err)
	client := openai.NewClient(option.WithAPIKey("sk-test"), option.WithBaseURL(srv.URL+"/v1/"),
		option.WithHTTPClient(guardedClient(t, b)), option.WithMaxRetries(0))

	created, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "gpt-4.1", Background: openai.Bool(true), MaxOutputTokens: openai.Int(100),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")},
	})
	require.NoError(t, err)
	charged := b.Spent()
	require.Positive(t, charged, "the reservation of the background response")

	stream := client.Responses.GetStreaming(context.Background(), created.ID, responses.ResponseGetParams{StartingAfter: openai.Int(3)})
	var completed bool
	for stream.Next() {
		completed = completed || stream.Current().Type == "response.completed"
	}
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())

	assert.True(t, completed)
	assert.Equal(t, []string{"POST /v1/responses", "GET /v1/responses/resp_1"}, methods)
	assert.Equal(t, charged, b.Spent(), "reading the response is not billed")
}
