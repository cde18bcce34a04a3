package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Responses API's streams end with response.completed (or
// response.incomplete, response.failed), not [DONE]. openai-go ends a
// stream that stops before it as if the answer were whole; under the
// Breaker, as for a chat stream, the caller gets an error instead.

// responsesStream answers with a Responses stream that says "Hel", "lo",
// then ends with last (nothing: the stream is cut short, cleanly, as a
// relay that lost its upstream ends it).
func responsesStream(last string) answer {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,"+
			"\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1,\"model\":\"gpt-4.1\",\"status\":\"in_progress\",\"output\":[]}}\n\n")
		for i, word := range []string{"Hel", "lo"} {
			io.WriteString(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":"+
				string(rune('1'+i))+",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\""+word+"\"}\n\n")
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, last)
	}
}

const responsesCompleted = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":" + responseWithText + "}\n\n"

// responseWithText is a Responses API answer saying "Hello".
const responseWithText = `{"id":"resp_1","object":"response","created_at":1,"model":"gpt-4.1","status":"completed",` +
	`"output":[{"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"Hello","annotations":[]}]}],` +
	`"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}}`

// openAIGoResponsesStream reads a streamed response through c, under the
// full stack, and returns its text and the stream's error.
func openAIGoResponsesStream(a *api, c *http.Client) (string, error) {
	s := newOpenAIGo(a, c, option.WithMaxRetries(0)).Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
		Model:           "gpt-4.1",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")},
		MaxOutputTokens: openai.Int(64),
	})
	defer s.Close()
	var text strings.Builder
	for s.Next() {
		text.WriteString(s.Current().Delta)
	}
	return text.String(), s.Err()
}

// fullStack is Retrier → Breaker → Budget → Limiter, as doc.go recommends,
// with a Budget of limit that prices gpt-4.1.
func fullStack(t *testing.T, limit httpguard.Money) (*http.Client, *httpguard.Budget) {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"gpt-4.1": {"input": 2, "output": 8}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: prices})
	require.NoError(t, err)
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 1_000_000})
	require.NoError(t, err)
	return guardedClient(t, newRetrier(t, fastPolicy()), newBreaker(t), b, l), b
}

func TestOpenAIGoReportsAResponsesStreamCutShort(t *testing.T) {
	a := newAPI(t, responsesStream(""))
	c, b := fullStack(t, httpguard.Dollar)

	text, err := openAIGoResponsesStream(a, c)

	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Contains(t, err.Error(), "the stream ended without its terminal event")
	assert.Equal(t, "Hello", text, "what came before the cut is read")
	assert.Positive(t, b.Spent(), "a cut stream is charged its reservation")
}

func TestOpenAIGoReadsAWholeResponsesStream(t *testing.T) {
	failed := "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":" +
		strings.Replace(responseWithText, `"status":"completed",`, `"status":"failed","error":{"code":"server_error","message":"failed"},`, 1) + "}\n\n"
	for name, last := range map[string]string{"completed": responsesCompleted, "failed": failed} {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, responsesStream(last))
			c, _ := fullStack(t, httpguard.Dollar)

			text, err := openAIGoResponsesStream(a, c)

			require.NoError(t, err, "the stream ended with its terminal event")
			assert.Equal(t, "Hello", text)
		})
	}
}

// A Responses stream that OpenAI ends with an error event alone (a rate
// limit here), in the shape it sends (an error object, at which openai-go
// stops and closes the stream) or the one its reference documents (code
// and message beside the type, which openai-go reads on to the end),
// reaches openai-go as the provider sent it, and counts as the error says:
// a rate limit neither way, so that one Breaker that a failure opens stays
// closed. It was read as a stream cut short: the flat one reached
// openai-go as io.ErrUnexpectedEOF, and counted a failure.
func TestOpenAIGoReadsAResponsesStreamEndedByAnErrorEvent(t *testing.T) {
	for name, tc := range map[string]struct {
		event   string
		wantErr string // openai-go's error, or "" for none
	}{
		"an error object": {"event: error\ndata: {\"type\":\"error\",\"sequence_number\":3,\"error\":{\"type\":\"tokens\"," +
			"\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\",\"param\":null}}\n\n", "Rate limit reached"},
		"the documented shape": {"event: error\ndata: {\"type\":\"error\",\"sequence_number\":3,\"code\":\"rate_limit_exceeded\"," +
			"\"message\":\"Rate limit reached\",\"param\":null}\n\n", ""},
	} {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, responsesStream(tc.event))
			br, err := httpguard.NewBreaker(httpguard.BreakerConfig{ConsecutiveFailures: 1})
			require.NoError(t, err)

			text, err := openAIGoResponsesStream(a, guardedClient(t, br))

			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.NotErrorIs(t, err, io.ErrUnexpectedEOF)
				assert.Contains(t, err.Error(), tc.wantErr)
			}
			assert.Equal(t, "Hello", text)
			s := br.Stats()
			require.Len(t, s, 1)
			assert.Equal(t, httpguard.CircuitClosed, s[0].State, "a rate limit opens no circuit")
			assert.Zero(t, s[0].Calls, "counts neither way")
		})
	}
}
