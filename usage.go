package httpguard

import "net/http"

// This file reads token counts: estimates from request bodies before they are
// sent, and real usage from answers (JSON and SSE streams) as the caller
// reads them. Budget and Limiter both use it; it is the one place that parses
// these formats, and it is fuzzed.
//
// CONTRACT FOR THE BUDGET AND LIMITER (implementation in progress): the
// signatures below are what the other layers code against.

// Usage is the token usage one answer reports.
type Usage struct {
	// InputTokens counts the prompt, including cached tokens.
	InputTokens int64
	// CachedInputTokens is the part of InputTokens served from the
	// provider's prompt cache (billed at the cached price).
	CachedInputTokens int64
	// OutputTokens counts the completion, including reasoning tokens.
	OutputTokens int64
}

// chatRequest is what a layer needs to know of a chat request body.
type chatRequest struct {
	Model        string
	Stream       bool
	IncludeUsage bool  // stream_options.include_usage is true
	PromptTokens int64 // a safe upper bound of the prompt's tokens
	MaxOutput    int64 // max_tokens or max_completion_tokens; 0 when absent
}

// parseChatRequest reads a JSON chat request body (OpenAI or Anthropic
// shape). A body that is not JSON returns an error.
func parseChatRequest(body []byte) (chatRequest, error) {
	panic("not implemented")
}

// observeUsage wraps resp.Body so that report is called exactly once, when
// the caller reads the body to its end or closes it, with the usage found in
// the bytes the caller read (ok false when none was found, the stream was cut
// short, or the usage was malformed). What the caller reads is unchanged and
// not buffered twice. JSON answers and SSE streams (OpenAI chunks, Anthropic
// events) are both understood, told apart by Content-Type.
func observeUsage(resp *http.Response, report func(u Usage, ok bool)) {
	panic("not implemented")
}
