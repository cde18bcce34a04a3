package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/holysheep/httpguard"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the Breaker and the Fallback under the SDKs: a chat
// stream that ends without its terminal event, as when a relay loses its
// upstream mid-answer and ends with a clean 200 (Portkey #1797), is an
// error the SDKs report instead of half an answer taken for a whole; and a
// request the primary gives up on is answered by the next target.

// cutStream answers with an OpenAI chat stream of the given words and ends
// it cleanly without data: [DONE].
func cutStream(words ...string) answer {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range words {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"+
				"\"model\":\"deepseek-v3.2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},"+
				"\"finish_reason\":null}]}\n\n", word)
			w.(http.Flusher).Flush()
		}
	}
}

// cutAnthropicStream answers with an Anthropic message stream that ends
// cleanly without message_stop.
func cutAnthropicStream(w http.ResponseWriter, _ *http.Request, _ int) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, e := range []string{
		`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}`,
		`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}`,
	} {
		io.WriteString(w, e+"\n\n")
		w.(http.Flusher).Flush()
	}
}

func newBreaker(t *testing.T) *httpguard.Breaker {
	t.Helper()
	b, err := httpguard.NewBreaker(httpguard.BreakerConfig{})
	require.NoError(t, err)
	return b
}

// openAIGoStream reads a streamed chat completion through c and returns
// the text and the stream's error.
func openAIGoStream(a *api, c *http.Client) (string, error) {
	s := newOpenAIGo(a, c, option.WithMaxRetries(0)).Chat.Completions.NewStreaming(context.Background(), openAIChat())
	defer s.Close()
	var text strings.Builder
	for s.Next() {
		for _, ch := range s.Current().Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	return text.String(), s.Err()
}

func TestOpenAIGoReportsAStreamCutBeforeDONE(t *testing.T) {
	a := newAPI(t, cutStream("Hel", "lo"))

	text, err := openAIGoStream(a, guardedClient(t, newBreaker(t)))

	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Contains(t, err.Error(), "the stream ended without its terminal event")
	assert.Equal(t, "Hello", text, "what came before the cut is read")
}

// The control: without the Breaker's check openai-go ends the stream as
// if the answer were whole.
func TestOpenAIGoTakesACutStreamForAWholeOneWithoutTheCheck(t *testing.T) {
	a := newAPI(t, cutStream("Hel", "lo"))

	text, err := openAIGoStream(a, guardedClient(t))

	assert.NoError(t, err)
	assert.Equal(t, "Hello", text)
}

// goOpenAIStream reads a streamed chat completion through c and returns
// the text and the error that ended it.
func goOpenAIStream(t *testing.T, a *api, c *http.Client) (string, error) {
	t.Helper()
	s, err := newGoOpenAI(a, c).CreateChatCompletionStream(context.Background(), goOpenAIChat())
	require.NoError(t, err)
	defer s.Close()
	var text strings.Builder
	for {
		chunk, err := s.Recv()
		if err != nil {
			return text.String(), err
		}
		for _, ch := range chunk.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
}

func TestGoOpenAIReportsAStreamCutBeforeDONE(t *testing.T) {
	a := newAPI(t, cutStream("Hel", "lo"))

	text, err := goOpenAIStream(t, a, guardedClient(t, newBreaker(t)))

	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.False(t, errors.Is(err, io.EOF), "not the end go-openai reports for [DONE]")
	assert.Equal(t, "Hello", text)
}

func TestGoOpenAITakesACutStreamForAWholeOneWithoutTheCheck(t *testing.T) {
	a := newAPI(t, cutStream("Hel", "lo"))

	text, err := goOpenAIStream(t, a, guardedClient(t))

	assert.Equal(t, io.EOF, err, "go-openai's end of stream")
	assert.Equal(t, "Hello", text)
}

func TestGoOpenAIReadsAWholeStreamThroughTheBreaker(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, _ *http.Request, _ int) { streamChunks("Hel", "lo")(w) })

	text, err := goOpenAIStream(t, a, guardedClient(t, newBreaker(t)))

	assert.Equal(t, io.EOF, err)
	assert.Equal(t, "Hello", text)
}

// anthropicStream reads a streamed message through c and returns its text
// and the stream's error.
func anthropicStream(t *testing.T, a *api, c *http.Client) (string, error) {
	t.Helper()
	s := newAnthropic(a, c).Messages.NewStreaming(context.Background(), anthropicMessageParams())
	defer s.Close()
	var msg anthropic.Message
	for s.Next() {
		require.NoError(t, msg.Accumulate(s.Current()))
	}
	require.Len(t, msg.Content, 1)
	return msg.Content[0].Text, s.Err()
}

func TestAnthropicReportsAStreamCutBeforeMessageStop(t *testing.T) {
	a := newAPI(t, cutAnthropicStream)

	text, err := anthropicStream(t, a, guardedClient(t, newBreaker(t)))

	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, "Hel", text)
}

func TestAnthropicTakesACutStreamForAWholeOneWithoutTheCheck(t *testing.T) {
	a := newAPI(t, cutAnthropicStream)

	text, err := anthropicStream(t, a, guardedClient(t))

	assert.NoError(t, err)
	assert.Equal(t, "Hel", text)
}

// With a Fallback above the Retrier, openai-go gets the second target's
// answer when the primary is down, and TargetHeader says who answered.
func TestOpenAIGoIsAnsweredByTheNextTargetWhenThePrimaryIsDown(t *testing.T) {
	primary := newAPI(t, always(http.StatusServiceUnavailable, openAIUnavailable))
	second := newAPI(t, always(http.StatusOK, chatCompletion))
	f, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
		{Name: "holysheep", BaseURL: primary.URL + "/v1"},
		{Name: "openai", BaseURL: second.URL + "/v1", Header: http.Header{"Authorization": {"Bearer sk-second"}},
			Models: map[string]string{"deepseek-v3.2": "gpt-4.1-mini"}},
	}})
	require.NoError(t, err)
	c := guardedClient(t, f, newRetrier(t, fastPolicy()), newBreaker(t))

	var resp *http.Response
	got, err := newOpenAIGo(primary, c, option.WithResponseInto(&resp)).Chat.Completions.New(context.Background(), openAIChat())

	require.NoError(t, err)
	assert.Equal(t, "hello", got.Choices[0].Message.Content)
	assert.Equal(t, "openai", resp.Header.Get(httpguard.TargetHeader))
	assert.EqualValues(t, retrierMaxAttempts, primary.hits.Load())
	require.Len(t, second.received(), 1)
	assert.Contains(t, string(second.received()[0]), `"model":"gpt-4.1-mini"`)
	assert.Equal(t, strings.Replace(string(primary.received()[0]), `"model":"deepseek-v3.2"`, `"model":"gpt-4.1-mini"`, 1),
		string(second.received()[0]))
}
