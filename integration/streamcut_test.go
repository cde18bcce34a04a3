package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A stream cut after the data line of the usage-only chunk the Budget asked
// for, before the blank line that ends its event: go-openai reads a stream
// line by line and hands that line to a caller that never asked for usage
// as a chunk without choices (on which the usual resp.Choices[0] panics).
// The SSE spec drops an event the stream ends inside, and so must the Budget.
func TestGoOpenAIDoesNotSeeAUsageChunkTheStreamWasCutIn(t *testing.T) {
	text, a, _ := goOpenAIStreamThroughBudget(t, streamChunk("Hel")+streamChunk("lo")+strings.TrimSuffix(streamUsageChunk, "\n"))
	assert.Equal(t, "Hello", text)
	assert.Contains(t, string(a.received()[0]), `"include_usage":true`)
}

// Was a bug: the usage-only chunk the Budget asked for, with its choices
// null (as Cloudflare Workers AI and ModelScope send it, a Go server's nil
// slice) or missing (as Fireworks sends it) rather than [], reached a
// go-openai caller that never asked for usage as a chunk without choices,
// on which the usual resp.Choices[0] panics. The Budget hides it, and
// charges its usage.
func TestGoOpenAIDoesNotSeeAUsageChunkWithNullOrNoChoices(t *testing.T) {
	for name, choices := range map[string]string{"null": `"choices":null,`, "missing": ``} {
		t.Run(name, func(t *testing.T) {
			text, a, b := goOpenAIStreamThroughBudget(t, streamChunk("Hel")+streamChunk("lo")+
				strings.Replace(streamUsageChunk, `"choices":[],`, choices, 1)+"data: [DONE]\n\n")
			assert.Equal(t, "Hello", text)
			assert.Contains(t, string(a.received()[0]), `"include_usage":true`)
			price := httpguard.Price{Input: httpguard.Dollars(0.28), Output: httpguard.Dollars(0.42)}
			assert.Equal(t, price.Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 3}), b.Spent(), "the usage the hidden chunk reported")
		})
	}
}

// goOpenAIStreamThroughBudget streams a go-openai chat, which does not ask
// for usage, through a Retrier and a Budget from a server that answers
// stream, and returns the text the caller read, the server and the
// Budget. Every chunk the caller reads must carry a choice.
func goOpenAIStreamThroughBudget(t *testing.T, stream string) (string, *api, *httpguard.Budget) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, stream)
	})
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"deepseek-v3.2": {"input": 0.28, "output": 0.42}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices})
	require.NoError(t, err)
	req := goOpenAIChat()
	req.Stream = true

	s, err := newGoOpenAI(a, guardedClient(t, newRetrier(t, fastPolicy()), b)).CreateChatCompletionStream(context.Background(), req)
	require.NoError(t, err)
	defer s.Close()
	var text strings.Builder
	for {
		got, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.NotEmpty(t, got.Choices, "a usage-only chunk the caller did not ask for: %+v", got)
		text.WriteString(got.Choices[0].Delta.Content)
	}
	return text.String(), a, b
}

// streamChunk is a chat-completions chunk carrying word, as an SSE event.
func streamChunk(word string) string {
	return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"deepseek-v3.2",` +
		`"choices":[{"index":0,"delta":{"content":"` + word + `"},"finish_reason":null}],"usage":null}` + "\n\n"
}

// streamUsageChunk is the usage-only chunk of include_usage, as an SSE event.
const streamUsageChunk = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"deepseek-v3.2",` +
	`"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}` + "\n\n"
