package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The endpoints beside chat, each under the recommended stack (Retrier →
// Budget → Limiter) inside the SDK that calls it: embeddings, moderations,
// images, audio uploads (multipart), batches and files, Anthropic streams
// with tool use.

// endpointServer is a loopback server for every path: the first request
// gets first (when not nil), every later one ok.
func endpointServer(t *testing.T, first, ok answer) *api {
	t.Helper()
	a := &api{hit: make(chan struct{}), arrivals: map[string]chan struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := int(a.hits.Add(1))
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.bodies = append(a.bodies, b)
		a.sdkCount = append(a.sdkCount, r.Header.Get("X-Stainless-Retry-Count"))
		a.mu.Unlock()
		if n == 1 && first != nil {
			first(w, r, n)
			return
		}
		ok(w, r, n)
	})
	a.Server = httptest.NewServer(mux)
	t.Cleanup(a.Close)
	return a
}

// endpointStack is Retrier → Budget → Limiter with a Budget of limit
// pricing the models below; exempt is its BudgetConfig.Exempt.
func endpointStack(t *testing.T, limit httpguard.Money, exempt func(*http.Request) bool) (*http.Client, *httpguard.Budget) {
	t.Helper()
	prices, err := httpguard.LoadPrices(strings.NewReader(`{"text-embedding-3-small": {"input": 0.02, "output": 0},
		"gpt-image-1": {"input": 5, "output": 40, "image_input": 10}, "claude-sonnet-4-5": {"input": 3, "output": 15}}`))
	require.NoError(t, err)
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: prices, Exempt: exempt})
	require.NoError(t, err)
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 1_000_000})
	require.NoError(t, err)
	return guardedClient(t, newRetrier(t, fastPolicy()), b, l), b
}

func unavailable(w http.ResponseWriter, _ *http.Request, _ int) {
	reply(w, http.StatusServiceUnavailable, openAIUnavailable)
}

// base64Floats is n float32s, as an embedding's base64 encoding_format
// writes them.
func base64Floats(n int) string {
	buf := make([]byte, 4*n)
	for i := range n {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(i)/float32(n)))
	}
	return base64.StdEncoding.EncodeToString(buf)
}

// Three hundred base64 embeddings make a 2.5 MB answer, its usage at the
// end: go-openai decodes every vector, and the Budget charges the usage.
func TestGoOpenAIEmbedsManyInputsInBase64(t *testing.T) {
	const inputs, dims = 300, 1536
	a := endpointServer(t, unavailable, func(w http.ResponseWriter, _ *http.Request, _ int) {
		var sb strings.Builder
		sb.WriteString(`{"object":"list","data":[`)
		for i := range inputs {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, `{"object":"embedding","index":%d,"embedding":"%s"}`, i, base64Floats(dims))
		}
		sb.WriteString(`],"model":"text-embedding-3-small","usage":{"prompt_tokens":900,"total_tokens":900}}`)
		reply(w, http.StatusOK, sb.String())
	})
	c, b := endpointStack(t, httpguard.Dollar, nil)
	in := make([]string, inputs)
	for i := range in {
		in[i] = fmt.Sprintf("input number %d", i)
	}

	got, err := newGoOpenAI(a, c).CreateEmbeddings(context.Background(), goopenai.EmbeddingRequestStrings{
		Input: in, Model: "text-embedding-3-small", EncodingFormat: goopenai.EmbeddingEncodingFormatBase64})

	require.NoError(t, err)
	require.Len(t, got.Data, inputs)
	assert.Len(t, got.Data[inputs-1].Embedding, dims)
	assert.InDelta(t, 0.5, got.Data[inputs-1].Embedding[dims/2], 1e-6)
	assert.Equal(t, httpguard.Price{Input: 2 * httpguard.Cent}.Cost(httpguard.Usage{InputTokens: 900}), b.Spent())
	bodies := a.received()
	require.Len(t, bodies, 2)
	assert.Equal(t, bodies[0], bodies[1], "the retry sent the same body")
}

// A moderation is free: it passes a Budget whose table does not price
// OpenAI's moderation models, and the Retrier retries its 503.
func TestOpenAIGoModerationPassesTheBudget(t *testing.T) {
	a := endpointServer(t, unavailable, always(http.StatusOK,
		`{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{},"category_scores":{},"category_applied_input_types":{}}]}`))
	c, b := endpointStack(t, httpguard.Cent, nil)

	got, err := newOpenAIGo(a, c).Moderations.New(context.Background(), openai.ModerationNewParams{
		Model: openai.ModerationModelOmniModerationLatest,
		Input: openai.ModerationNewParamsInputUnion{OfString: openai.String("hello")},
	})

	require.NoError(t, err)
	require.Len(t, got.Results, 1)
	assert.Zero(t, b.Spent())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts(), "the Retrier retried, not the SDK")
}

// An image request reserves n images' output at the image price: four
// images of gpt-image-1 ($40 per million output tokens) do not fit in
// $0.50, one does, and is charged its usage.
func TestOpenAIGoImagesReserveEveryImage(t *testing.T) {
	a := endpointServer(t, nil, always(http.StatusOK, `{"created":1,"data":[{"b64_json":"aGVsbG8="}],`+
		`"usage":{"total_tokens":4180,"input_tokens":20,"output_tokens":4160,"input_tokens_details":{"text_tokens":20,"image_tokens":0}}}`))
	c, b := endpointStack(t, 50*httpguard.Cent, nil)
	client := newOpenAIGo(a, c, option.WithMaxRetries(0))

	_, err := client.Images.Generate(context.Background(), openai.ImageGenerateParams{Model: "gpt-image-1", Prompt: "a fox", N: openai.Int(4)})
	require.ErrorIs(t, err, httpguard.ErrBudgetExceeded)
	assert.Zero(t, a.hits.Load(), "nothing sent")

	got, err := client.Images.Generate(context.Background(), openai.ImageGenerateParams{Model: "gpt-image-1", Prompt: "a fox"})
	require.NoError(t, err)
	assert.Equal(t, "aGVsbG8=", got.Data[0].B64JSON)
	assert.Equal(t, httpguard.Price{Input: 5 * httpguard.Dollar, Output: 40 * httpguard.Dollar}.Cost(httpguard.Usage{InputTokens: 20, OutputTokens: 4160}), b.Spent())
}

// An audio upload is a multipart body the Budget cannot price: refused,
// unsent, unless exempt. Exempt, its 503 is retried with the whole body,
// the file's 1.2 MB included, by openai-go and go-openai alike.
func TestAudioUploadsAreRetriedWhole(t *testing.T) {
	audio := bytes.Repeat([]byte("RIFFWAVEdata"), 100_000)
	isAudio := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/audio/transcriptions") }
	transcribe := map[string]func(*api, *http.Client) (string, error){
		"openai-go": func(a *api, c *http.Client) (string, error) {
			got, err := newOpenAIGo(a, c, option.WithMaxRetries(0)).Audio.Transcriptions.New(context.Background(), openai.AudioTranscriptionNewParams{
				Model: "whisper-1", File: openai.File(bytes.NewReader(audio), "a.wav", "audio/wav")})
			if err != nil {
				return "", err
			}
			return got.Text, nil
		},
		"go-openai": func(a *api, c *http.Client) (string, error) {
			got, err := newGoOpenAI(a, c).CreateTranscription(context.Background(), goopenai.AudioRequest{
				Model: "whisper-1", Reader: bytes.NewReader(audio), FilePath: "a.wav"})
			return got.Text, err
		},
	}
	for name, call := range transcribe {
		t.Run(name, func(t *testing.T) {
			a := endpointServer(t, unavailable, always(http.StatusOK, `{"text":"hello world"}`))
			refusing, _ := endpointStack(t, httpguard.Dollar, nil)
			_, err := call(a, refusing)
			require.ErrorIs(t, err, httpguard.ErrUnknownModel)
			assert.Zero(t, a.hits.Load(), "nothing sent")

			exempt, _ := endpointStack(t, httpguard.Dollar, isAudio)
			text, err := call(a, exempt)

			require.NoError(t, err)
			assert.Equal(t, "hello world", text)
			bodies := a.received()
			require.Len(t, bodies, 2)
			assert.Greater(t, len(bodies[0]), len(audio))
			assert.Equal(t, bodies[0], bodies[1], "the retry sent the whole upload again")
		})
	}
}

// A batch names no model: the Budget refuses it, nothing sent, and says to
// exempt it; the files it reads are uploads like audio.
func TestOpenAIGoBatchIsRefusedUnlessExempt(t *testing.T) {
	a := endpointServer(t, nil, always(http.StatusOK, `{"id":"batch_1","object":"batch","endpoint":"/v1/chat/completions",`+
		`"input_file_id":"file-1","completion_window":"24h","status":"validating","created_at":1}`))
	params := openai.BatchNewParams{InputFileID: "file-1", Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h}
	refusing, _ := endpointStack(t, httpguard.Dollar, nil)

	_, err := newOpenAIGo(a, refusing, option.WithMaxRetries(0)).Batches.New(context.Background(), params)
	require.ErrorIs(t, err, httpguard.ErrUnknownModel)
	assert.Contains(t, err.Error(), "exempt such requests with BudgetConfig.Exempt")
	assert.Zero(t, a.hits.Load())

	exempt, _ := endpointStack(t, httpguard.Dollar, func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/batches") })
	got, err := newOpenAIGo(a, exempt, option.WithMaxRetries(0)).Batches.New(context.Background(), params)
	require.NoError(t, err)
	assert.Equal(t, "batch_1", got.ID)
	_, err = newOpenAIGo(a, exempt, option.WithMaxRetries(0)).Batches.Cancel(context.Background(), "batch_1")
	require.NoError(t, err, "a POST without a body passes")
}

// An Anthropic stream that calls a tool, after a 529 the Retrier retried:
// the SDK accumulates the tool's input from its deltas, and the Budget
// charges message_delta's cumulative usage.
func TestAnthropicStreamsAToolCallAfterAnOverload(t *testing.T) {
	a := endpointServer(t, always(statusOverloaded, anthropicOverload), func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		event := func(name, data string) { fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data) }
		event("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",`+
			`"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}`)
		event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}`)
		event("ping", `{"type":"ping"}`)
		event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}`)
		event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}`)
		event("content_block_stop", `{"type":"content_block_stop","index":0}`)
		event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":20}}`)
		event("message_stop", `{"type":"message_stop"}`)
	})
	c, b := endpointStack(t, httpguard.Dollar, nil)
	params := anthropicMessageParams()
	params.Tools = []anthropic.ToolUnionParam{anthropic.ToolUnionParamOfTool(
		anthropic.ToolInputSchemaParam{Properties: map[string]any{"city": map[string]any{"type": "string"}}}, "get_weather")}

	s := newAnthropic(a, c).Messages.NewStreaming(context.Background(), params)
	defer s.Close()
	var msg anthropic.Message
	for s.Next() {
		require.NoError(t, msg.Accumulate(s.Current()))
	}

	require.NoError(t, s.Err())
	require.Len(t, msg.Content, 1)
	assert.Equal(t, "get_weather", msg.Content[0].Name)
	assert.JSONEq(t, `{"city":"Paris"}`, string(msg.Content[0].Input))
	assert.EqualValues(t, "tool_use", msg.StopReason)
	assert.Equal(t, httpguard.Price{Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar}.Cost(httpguard.Usage{InputTokens: 50, OutputTokens: 20}), b.Spent())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts(), "the Retrier retried, not the SDK")
}

// An image stream ends with image_generation.completed, which carries its
// usage: openai-go reads every event, and the Budget charges that usage,
// not the stream's reservation of 4,096 output tokens.
func TestOpenAIGoImageStreamIsChargedItsUsage(t *testing.T) {
	a := endpointServer(t, unavailable, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"b64_json\":\"aGk=\","+
			"\"partial_image_index\":0,\"created_at\":1,\"size\":\"1024x1024\",\"quality\":\"low\",\"background\":\"opaque\",\"output_format\":\"png\"}\n\n")
		io.WriteString(w, "event: image_generation.completed\ndata: {\"type\":\"image_generation.completed\",\"b64_json\":\"aGVsbG8=\","+
			"\"created_at\":1,\"size\":\"1024x1024\",\"quality\":\"low\",\"background\":\"opaque\",\"output_format\":\"png\","+
			"\"usage\":{\"total_tokens\":392,\"input_tokens\":20,\"output_tokens\":372,\"input_tokens_details\":{\"text_tokens\":20,\"image_tokens\":0}}}\n\n")
	})
	c, b := endpointStack(t, httpguard.Dollar, nil)

	s := newOpenAIGo(a, c).Images.GenerateStreaming(context.Background(), openai.ImageGenerateParams{
		Model: "gpt-image-1", Prompt: "a fox", PartialImages: openai.Int(1), Quality: openai.ImageGenerateParamsQualityLow})
	defer s.Close()
	var events []string
	for s.Next() {
		events = append(events, s.Current().Type)
	}

	require.NoError(t, s.Err())
	assert.Equal(t, []string{"image_generation.partial_image", "image_generation.completed"}, events)
	assert.Equal(t, httpguard.Price{Input: 5 * httpguard.Dollar, Output: 40 * httpguard.Dollar}.Cost(httpguard.Usage{InputTokens: 20, OutputTokens: 372}), b.Spent())
	assert.Equal(t, []string{"0", "0"}, a.sdkRetryCounts(), "the Retrier retried, not the SDK")
}
