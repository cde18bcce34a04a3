package httpguardtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// apiShape tells the two answer formats apart.
type apiShape int

const (
	openAI    apiShape = iota // /v1/chat/completions
	anthropic                 // /v1/messages
)

// chatRequest is what the server reads of a chat request, OpenAI or
// Anthropic shape.
type chatRequest struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	System              json.RawMessage   `json:"system"`
	MaxTokens           int               `json:"max_tokens"`
	MaxCompletionTokens int               `json:"max_completion_tokens"`
	N                   int               `json:"n"` // OpenAI: choices to answer
	Stream              bool              `json:"stream"`
	StreamOptions       struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`

	contentBytes int
}

// maxChoices is the most choices (n) a request may ask for, as OpenAI
// refuses more ("Expected a value <= 128").
const maxChoices = 128

func parseChat(body []byte) (chatRequest, error) {
	var r chatRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return r, err
	}
	if r.N > maxChoices {
		// Answered, it would be a slice of n choices: a test's hostile n
		// would take the server's memory, or panic its handler.
		return r, fmt.Errorf("n is %d, above the maximum of %d", r.N, maxChoices)
	}
	if r.Model == "" {
		r.Model = "httpguardtest"
	}
	r.contentBytes = textBytes(r.System)
	for _, m := range r.Messages {
		var msg struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(m, &msg) == nil {
			r.contentBytes += textBytes(msg.Content)
		}
	}
	return r, nil
}

// textBytes counts the bytes of text in a content value: a string, or an
// array of parts whose "text" fields count.
func textBytes(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return len(s)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) == nil {
		n := 0
		for _, p := range parts {
			n += len(p.Text)
		}
		return n
	}
	return 0
}

// usage is the token usage of one answer.
type usage struct {
	prompt, cached, completion int  // completion: of each choice
	choices                    int  // OpenAI's n, at least 1
	truncated                  bool // completion lowered to the request's max tokens
}

// completions returns the completion tokens of all the choices.
func (u usage) completions() int { return u.completion * u.choices }

// usageFor computes an answer's usage, deterministically: the prompt is the
// text of the system prompt and messages, 4 bytes a token rounded up, at
// least 1; the completion is Config.CompletionTokens, lowered to the
// request's max tokens, for each of the n choices an OpenAI request asks
// for (Anthropic's API has no n: one message).
func (s *Server) usageFor(api apiShape, r chatRequest) usage {
	u := usage{prompt: max(1, (r.contentBytes+3)/4), completion: s.cfg.CompletionTokens, choices: 1}
	if api == openAI {
		u.choices = max(1, r.N)
	}
	u.cached = min(s.cfg.CachedTokens, u.prompt)
	for _, m := range []int{r.MaxTokens, r.MaxCompletionTokens} {
		if m > 0 && m < u.completion {
			u.completion, u.truncated = m, true
		}
	}
	return u
}

// parseRequest reads a chat request to api's endpoint and the usage of its
// answer, which must hold at most maxAnswerTokens completion tokens.
func (s *Server) parseRequest(api apiShape, body []byte) (chatRequest, usage, error) {
	r, err := parseChat(body)
	if err != nil {
		return r, usage{}, err
	}
	u := s.usageFor(api, r)
	if u.completions() > maxAnswerTokens { // at most 128 × maxAnswerTokens: no overflow
		return r, u, fmt.Errorf("the answer would hold %d × %d = %d completion tokens, above the maximum of %d: lower n or max_tokens",
			u.choices, u.completion, u.completions(), maxAnswerTokens)
	}
	return r, u, nil
}

// word returns the text of the i-th completion token.
func word(i int) string {
	if i == 0 {
		return "ok"
	}
	return " ok"
}

var answerID atomic.Int64

// answer sends a successful answer of usage u to r, cut short after cut
// events (or half its body) when cut is above zero.
//
// Counters change before the client can see what they count: the status
// before the body, the usage before the answer's last byte, which stays
// buffered until the handler returns.
func (s *Server) answer(w http.ResponseWriter, api apiShape, r chatRequest, u usage, rl http.Header, cut int) {
	h := w.Header()
	for k, v := range rl {
		h[k] = v
	}
	id := strconv.FormatInt(answerID.Add(1), 10)
	if !r.Stream {
		var b []byte
		if api == anthropic {
			b = anthropicMessage(id, r.Model, u)
		} else {
			b = openAIMessage(id, r.Model, u)
		}
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		s.countStatus(http.StatusOK)
		w.WriteHeader(http.StatusOK)
		if cut > 0 {
			w.Write(b[:len(b)/2])
			s.resetConn(w, true)
			return
		}
		if _, err := w.Write(b[:len(b)-1]); err != nil {
			return
		}
		s.bill(u)
		w.Write(b[len(b)-1:])
		return
	}

	var events [][]byte
	if api == anthropic {
		events = anthropicStream(id, r.Model, u)
	} else {
		events = openAIStream(id, r.Model, u, r.StreamOptions.IncludeUsage)
	}
	if cut >= len(events) {
		cut = len(events) - 1
	}
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	s.countStatus(http.StatusOK)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if s.cfg.KeepAlive {
		w.Write([]byte(": keep-alive\n\n"))
	}
	last := len(events) - 1
	for i, e := range events {
		switch {
		case cut > 0 && i == cut:
			rc.Flush()
			s.resetConn(w, true)
			return
		case i == last:
			s.bill(u)
			w.Write(e)
			return
		}
		if _, err := w.Write(e); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// The JSON shapes below follow the providers' API references: OpenAI's
// chat completion object and chunk, Anthropic's message and stream events.

type openAIUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func newOpenAIUsage(u usage) *openAIUsage {
	ou := &openAIUsage{PromptTokens: u.prompt, CompletionTokens: u.completions(), TotalTokens: u.prompt + u.completions()}
	ou.PromptTokensDetails.CachedTokens = u.cached
	return ou
}

func finishReason(u usage) string {
	if u.truncated {
		return "length"
	}
	return "stop"
}

func completionText(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(word(i))
	}
	return b.String()
}

func openAIMessage(id, model string, u usage) []byte {
	type message struct {
		Role    string  `json:"role"`
		Content string  `json:"content"`
		Refusal *string `json:"refusal"`
	}
	type choice struct {
		Index        int       `json:"index"`
		Message      message   `json:"message"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason string    `json:"finish_reason"`
	}
	choices := make([]choice, max(1, u.choices))
	for j := range choices {
		choices[j] = choice{Index: j, Message: message{Role: "assistant", Content: completionText(u.completion)}, FinishReason: finishReason(u)}
	}
	return mustJSON(struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []choice     `json:"choices"`
		Usage   *openAIUsage `json:"usage"`
	}{
		ID: "chatcmpl-" + id, Object: "chat.completion", Created: time.Now().Unix(), Model: model,
		Choices: choices,
		Usage:   newOpenAIUsage(u),
	})
}

// openAIStream returns the SSE frames of a streamed answer: a role chunk,
// one chunk per token, a finish chunk, the usage chunk when includeUsage,
// and [DONE].
func openAIStream(id, model string, u usage, includeUsage bool) [][]byte {
	type delta struct {
		Role    string `json:"role,omitempty"`
		Content string `json:"content"`
	}
	type choice struct {
		Index        int       `json:"index"`
		Delta        delta     `json:"delta"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason *string   `json:"finish_reason"`
	}
	type chunk struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []choice     `json:"choices"`
		Usage   *openAIUsage `json:"usage"`
	}
	created := time.Now().Unix()
	c := func(ch []choice, us *openAIUsage) []byte {
		return sseData(mustJSON(chunk{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: created,
			Model: model, Choices: ch, Usage: us}))
	}
	n := max(1, u.choices)
	frames := make([][]byte, 0, n*(u.completion+2)+2)
	fr := finishReason(u)
	for j := range n {
		frames = append(frames, c([]choice{{Index: j, Delta: delta{Role: "assistant"}}}, nil))
	}
	for i := range u.completion {
		for j := range n {
			frames = append(frames, c([]choice{{Index: j, Delta: delta{Content: word(i)}}}, nil))
		}
	}
	for j := range n {
		frames = append(frames, c([]choice{{Index: j, FinishReason: &fr}}, nil))
	}
	if includeUsage {
		frames = append(frames, c([]choice{}, newOpenAIUsage(u)))
	}
	return append(frames, []byte("data: [DONE]\n\n"))
}

type anthropicUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

// newAnthropicUsage reports u as Anthropic does: input_tokens excludes the
// tokens read from the cache.
func newAnthropicUsage(u usage, output int) anthropicUsage {
	return anthropicUsage{InputTokens: u.prompt - u.cached, CacheReadInputTokens: u.cached, OutputTokens: output}
}

func stopReason(u usage) string {
	if u.truncated {
		return "max_tokens"
	}
	return "end_turn"
}

type anthropicText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicMsg struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Role         string          `json:"role"`
	Model        string          `json:"model"`
	Content      []anthropicText `json:"content"`
	StopReason   *string         `json:"stop_reason"`
	StopSequence *string         `json:"stop_sequence"`
	Usage        anthropicUsage  `json:"usage"`
}

func anthropicMessage(id, model string, u usage) []byte {
	sr := stopReason(u)
	return mustJSON(anthropicMsg{ID: "msg_" + id, Type: "message", Role: "assistant", Model: model,
		Content:    []anthropicText{{Type: "text", Text: completionText(u.completion)}},
		StopReason: &sr, Usage: newAnthropicUsage(u, u.completion)})
}

// anthropicStream returns the named events of a streamed answer:
// message_start (input usage), content_block_start, ping, one
// content_block_delta per token, content_block_stop, message_delta
// (cumulative output usage), message_stop.
func anthropicStream(id, model string, u usage) [][]byte {
	frames := make([][]byte, 0, u.completion+6)
	frames = append(frames, sseEvent("message_start", map[string]any{"type": "message_start",
		"message": anthropicMsg{ID: "msg_" + id, Type: "message", Role: "assistant", Model: model,
			Content: []anthropicText{}, Usage: newAnthropicUsage(u, 1)}}))
	frames = append(frames, sseEvent("content_block_start", map[string]any{"type": "content_block_start",
		"index": 0, "content_block": anthropicText{Type: "text"}}))
	frames = append(frames, sseEvent("ping", map[string]any{"type": "ping"}))
	for i := range u.completion {
		frames = append(frames, sseEvent("content_block_delta", map[string]any{"type": "content_block_delta",
			"index": 0, "delta": map[string]any{"type": "text_delta", "text": word(i)}}))
	}
	frames = append(frames, sseEvent("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}))
	frames = append(frames, sseEvent("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stopReason(u), "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": u.completion}}))
	return append(frames, sseEvent("message_stop", map[string]any{"type": "message_stop"}))
}

func sseData(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

func sseEvent(name string, v any) []byte {
	return append([]byte("event: "+name+"\n"), sseData(mustJSON(v))...)
}

// mustJSON marshals values built in this package, which always marshal.
func mustJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("httpguardtest: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// writeError sends f's error answer in the endpoint's shape.
func (s *Server) writeError(w http.ResponseWriter, api apiShape, f Fault, rl http.Header) {
	h := w.Header()
	for k, v := range rl {
		h[k] = v
	}
	for k, v := range f.Header {
		h[k] = v
	}
	body := []byte(f.Body)
	if len(body) == 0 {
		typ, msg := f.Type, f.Message
		if typ == "" {
			typ = errorType(api, f.Status)
		}
		if msg == "" {
			msg = http.StatusText(f.Status)
			if msg == "" {
				msg = "status " + strconv.Itoa(f.Status)
			}
		}
		if api == anthropic {
			e := map[string]any{"type": typ, "message": msg}
			if f.Code != "" {
				e["details"] = map[string]any{"error_code": f.Code}
			}
			body = mustJSON(map[string]any{"type": "error", "error": e})
		} else {
			var code any
			if f.Code != "" {
				code = f.Code
			}
			body = mustJSON(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(f.Status)
	s.countStatus(f.Status)
	w.Write(body)
}

// errorType returns the endpoint's error type for status, for a Fault
// without a Type: Anthropic's are those of its API reference (errors).
func errorType(api apiShape, status int) string {
	if api == anthropic {
		switch {
		case status == http.StatusUnauthorized:
			return "authentication_error"
		case status == http.StatusForbidden:
			return "permission_error"
		case status == http.StatusNotFound:
			return "not_found_error"
		case status == http.StatusRequestEntityTooLarge:
			return "request_too_large"
		case status == http.StatusTooManyRequests:
			return "rate_limit_error"
		case status == 529:
			return "overloaded_error"
		case status >= 500:
			return "api_error"
		}
	} else if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}
