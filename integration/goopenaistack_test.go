package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	goopenai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// go-openai under the recommended stack, Retrier → Breaker → Budget →
// Limiter, for the endpoints beside chat and the faults providers make.

// goOpenAIStack is the recommended stack, Retrier → Breaker → Budget →
// Limiter, with a Budget of a dollar pricing deepseek-v3.2 and gpt-4o.
func goOpenAIStack(t *testing.T) (*http.Client, *httpguard.Budget) {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"deepseek-v3.2": {"input": 0.28, "output": 0.42}, "gpt-4o": {"input": 2.5, "output": 10}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices})
	require.NoError(t, err)
	br, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 5})
	require.NoError(t, err)
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 1_000_000})
	require.NoError(t, err)
	return guardedClient(t, newRetrier(t, fastPolicy()), br, b, l), b
}

// deepseekCost is what deepseek-v3.2 bills for u.
func deepseekCost(u httpguard.Usage) httpguard.Money {
	return httpguard.Price{Input: httpguard.Dollars(0.28), Output: httpguard.Dollars(0.42)}.Cost(u)
}

// Was a bug: go-openai's Moderations, OpenAI's free omni-moderation-latest,
// failed unsent under the recommended stack, every time: the Budget read
// the body to price it and, finding it free, asked GetBody for a copy to
// send, which the Retrier's resend gate refused as a resend by net/http.
func TestGoOpenAIModerationPassesTheRecommendedStack(t *testing.T) {
	a := endpointServer(t, unavailable, always(http.StatusOK,
		`{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"violence":true},"category_scores":{"violence":0.9}}]}`))
	c, b := goOpenAIStack(t)

	got, err := newGoOpenAI(a, c).Moderations(context.Background(),
		goopenai.ModerationRequest{Input: "hi", Model: goopenai.ModerationOmniLatest})

	require.NoError(t, err)
	require.Len(t, got.Results, 1)
	assert.True(t, got.Results[0].Flagged)
	assert.EqualValues(t, 2, a.hits.Load(), "the 503, then its retry")
	bodies := a.received()
	assert.Equal(t, bodies[0], bodies[1])
	assert.Contains(t, string(bodies[1]), `"model":"omni-moderation-latest"`)
	assert.Zero(t, b.Spent(), "free")
}

// readGoOpenAIStream reads s until io.EOF or an error, and returns the
// chunks read and the error (nil at io.EOF).
func readGoOpenAIStream(s *goopenai.ChatCompletionStream) ([]goopenai.ChatCompletionStreamResponse, error) {
	defer s.Close()
	var chunks []goopenai.ChatCompletionStreamResponse
	for {
		got, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, got)
	}
}

// goOpenAIStreamFrom streams a go-openai chat with options so through the
// recommended stack from a server that answers body, and returns the
// chunks read, the error and the Budget.
func goOpenAIStreamFrom(t *testing.T, body string, so *goopenai.StreamOptions) ([]goopenai.ChatCompletionStreamResponse, error, *httpguard.Budget) {
	t.Helper()
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	})
	c, b := goOpenAIStack(t)
	req := goOpenAIChat()
	req.Stream, req.StreamOptions = true, so
	s, err := newGoOpenAI(a, c).CreateChatCompletionStream(context.Background(), req)
	require.NoError(t, err)
	chunks, err := readGoOpenAIStream(s)
	return chunks, err, b
}

// A 429 with Retry-After, then a stream: the Retrier waits and retries,
// go-openai reads the stream, and the Budget charges the usage chunk it
// asked for once, hiding it from a caller that did not ask, and passing it
// to one that did.
func TestGoOpenAIStreamsAfterA429AndSeesUsageOnlyWhenAsked(t *testing.T) {
	for name, so := range map[string]*goopenai.StreamOptions{
		"not asked": nil, "asked false": {IncludeUsage: false}, "asked": {IncludeUsage: true},
	} {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", "0")
					reply(w, http.StatusTooManyRequests, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
					return
				}
				streamChunks("Hel", "lo")(w)
			})
			c, b := goOpenAIStack(t)
			req := goOpenAIChat()
			req.Stream, req.StreamOptions = true, so
			s, err := newGoOpenAI(a, c).CreateChatCompletionStream(context.Background(), req)
			require.NoError(t, err)

			chunks, err := readGoOpenAIStream(s)

			require.NoError(t, err)
			var text strings.Builder
			var usage *goopenai.Usage
			for _, ch := range chunks {
				if len(ch.Choices) == 0 {
					usage = ch.Usage
					continue
				}
				text.WriteString(ch.Choices[0].Delta.Content)
			}
			assert.Equal(t, "Hello", text.String())
			if so != nil && so.IncludeUsage {
				require.NotNil(t, usage, "the usage chunk the caller asked for")
				assert.Equal(t, 10, usage.TotalTokens)
			} else {
				assert.Nil(t, usage, "no chunk without choices for a caller that did not ask")
			}
			assert.EqualValues(t, 2, a.hits.Load())
			assert.Contains(t, string(a.received()[1]), `"include_usage":true`)
			assert.Equal(t, deepseekCost(httpguard.Usage{InputTokens: 7, OutputTokens: 3}), b.Spent())
		})
	}
}

// A streamed tool call reaches go-openai whole, its arguments split over
// chunks, and the usage chunk the Budget asked for does not.
func TestGoOpenAIStreamsAToolCall(t *testing.T) {
	toolChunk := func(call string) string {
		return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"deepseek-v3.2",` +
			`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,` + call + `}]},"finish_reason":null}],"usage":null}` + "\n\n"
	}
	chunks, err, b := goOpenAIStreamFrom(t, toolChunk(`"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}`)+
		toolChunk(`"function":{"arguments":"{\"city\":"}`)+toolChunk(`"function":{"arguments":"\"Paris\"}"}`)+
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"deepseek-v3.2",`+
		`"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}`+"\n\n"+
		streamUsageChunk+"data: [DONE]\n\n", nil)

	require.NoError(t, err)
	var name, args strings.Builder
	for _, ch := range chunks {
		require.NotEmpty(t, ch.Choices, "a usage-only chunk the caller did not ask for")
		for _, call := range ch.Choices[0].Delta.ToolCalls {
			name.WriteString(call.Function.Name)
			args.WriteString(call.Function.Arguments)
		}
	}
	assert.Equal(t, "get_weather", name.String())
	assert.Equal(t, `{"city":"Paris"}`, args.String())
	assert.Equal(t, goopenai.FinishReasonToolCalls, chunks[len(chunks)-1].Choices[0].FinishReason)
	assert.Equal(t, deepseekCost(httpguard.Usage{InputTokens: 7, OutputTokens: 3}), b.Spent())
}

// go-openai takes a chunk for an error only when "error" is its first
// member. OpenRouter's mid-stream error, a chunk with an id and a choice
// whose finish_reason is "error" besides its error object, and no [DONE]
// after it, reaches the caller as a chunk like any other, then io.EOF:
// the provider's message is lost. The Breaker counts such a stream by its
// error (it ended at it, so it is no cut stream for io.ErrUnexpectedEOF),
// and the Budget charges its reservation.
func TestGoOpenAIReadsAnErrorChunkNotLedByItsErrorAsAChunk(t *testing.T) {
	chunks, err, b := goOpenAIStreamFrom(t, streamChunk("Hel")+
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"deepseek-v3.2",`+
		`"error":{"code":"server_error","message":"Provider disconnected unexpectedly"},`+
		`"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`+"\n\n", nil)

	require.NoError(t, err, "go-openai ends at io.EOF")
	require.Len(t, chunks, 2)
	assert.Equal(t, goopenai.FinishReason("error"), chunks[1].Choices[0].FinishReason)
	assert.Greater(t, b.Spent(), deepseekCost(httpguard.Usage{InputTokens: 7, OutputTokens: 3}), "the reservation")
}

// go-openai takes a chunk that begins with "error" for an error, even
// "error": null: Recv then fails to decode an empty line, not with an
// *openai.APIError, at the first such chunk. The stream was whole.
func TestGoOpenAIFailsOnAChunkLedByANullError(t *testing.T) {
	led := func(chunk string) string { return strings.Replace(chunk, "data: {", `data: {"error":null,`, 1) }
	chunks, err, _ := goOpenAIStreamFrom(t, led(streamChunk("Hel"))+led(streamChunk("lo"))+"data: [DONE]\n\n", nil)

	assert.Empty(t, chunks)
	require.Error(t, err)
	var apiErr *goopenai.APIError
	assert.False(t, errors.As(err, &apiErr))
	assert.EqualError(t, err, "unexpected end of JSON input")
}

// go-openai's DefaultAzureConfig asks for api-version 2023-05-15, which
// predates stream_options and refuses it: the Budget does not ask such a
// stream for its usage, and charges its reservation. From 2024-08-01 on
// it asks, hides the usage chunk, and charges the usage at the price of
// the deployment in the path.
func TestGoOpenAIAzureStreamIsChargedItsUsageFromAPIVersion20240801(t *testing.T) {
	for version, asked := range map[string]bool{"2023-05-15": false, "2024-10-21": true} {
		t.Run(version, func(t *testing.T) {
			var url string
			var a *api
			a = endpointServer(t, nil, func(w http.ResponseWriter, r *http.Request, n int) {
				url = r.URL.String()
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, streamChunk("Hel")+streamChunk("lo"))
				if strings.Contains(string(a.received()[n-1]), `"include_usage":true`) {
					io.WriteString(w, strings.Replace(streamUsageChunk, "deepseek-v3.2", "gpt-4o", 1))
				}
				io.WriteString(w, "data: [DONE]\n\n")
			})
			c, b := goOpenAIStack(t)
			cfg := goopenai.DefaultAzureConfig("azure-key", a.URL)
			cfg.APIVersion, cfg.HTTPClient = version, c
			req := goOpenAIChat()
			req.Model, req.Stream = "gpt-4o", true
			s, err := goopenai.NewClientWithConfig(cfg).CreateChatCompletionStream(context.Background(), req)
			require.NoError(t, err)

			chunks, err := readGoOpenAIStream(s)

			require.NoError(t, err)
			require.Len(t, chunks, 2, "no usage-only chunk")
			assert.Equal(t, "/openai/deployments/gpt-4o/chat/completions?api-version="+version, url)
			gpt4o := httpguard.Price{Input: httpguard.Dollars(2.5), Output: httpguard.Dollars(10)}
			if asked {
				assert.Equal(t, gpt4o.Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 3}), b.Spent())
			} else {
				assert.NotContains(t, string(a.received()[0]), "stream_options")
				assert.Greater(t, b.Spent(), gpt4o.Cost(httpguard.Usage{InputTokens: 7, OutputTokens: 64}), "the reservation: max_tokens at least")
			}
		})
	}
}
