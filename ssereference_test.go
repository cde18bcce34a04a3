package httpguard

import (
	"encoding/json"
	"strings"
	"testing"
)

// refStreamUsage is what encoding/json reads of a stream's usage: each data
// line (lines end at \r\n, \n or \r) decoded alone; in and out from each
// count the last usage (top-level, or in a message or response object)
// that holds it said, as SDKs that overwrite cumulative counts read them
// (anthropic-sdk-go); uncached, the input the last usage read whole does
// not say was cached, as openai-python keeps it. ok is false when a data
// line is neither JSON nor [DONE] nor blank.
func refStreamUsage(stream []byte) (in, out, uncached int64, ok bool) {
	type usage struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		TotalTokens      *int64 `json:"total_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
		CacheRead        *int64 `json:"cache_read_input_tokens"`
		CacheWrite       *int64 `json:"cache_creation_input_tokens"`
		PromptDetails    *struct {
			Cached *int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		InputDetails *struct {
			Cached *int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		CacheHit *int64 `json:"prompt_cache_hit_tokens"`
	}
	type line struct {
		Usage    *usage
		Message  *struct{ Usage *usage }
		Response *struct{ Usage *usage }
	}
	var last, whole usage
	take := func(u *usage) {
		if u == nil {
			return
		}
		whole = *u
		for _, p := range [][2]**int64{{&last.PromptTokens, &u.PromptTokens}, {&last.CompletionTokens, &u.CompletionTokens},
			{&last.TotalTokens, &u.TotalTokens}, {&last.InputTokens, &u.InputTokens}, {&last.OutputTokens, &u.OutputTokens},
			{&last.CacheRead, &u.CacheRead}, {&last.CacheWrite, &u.CacheWrite}} {
			if *p[1] != nil {
				*p[0] = *p[1]
			}
		}
	}
	s := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(stream))
	s = strings.TrimPrefix(s, "\xef\xbb\xbf")
	for _, l := range strings.Split(s, "\n") {
		v, isData := strings.CutPrefix(l, "data:")
		if !isData {
			continue
		}
		v = strings.TrimPrefix(v, " ")
		if t := strings.TrimSpace(v); t == "" || t == "[DONE]" {
			continue
		}
		var d line
		if json.Unmarshal([]byte(v), &d) != nil {
			return 0, 0, 0, false
		}
		take(d.Usage)
		if d.Message != nil {
			take(d.Message.Usage)
		}
		if d.Response != nil {
			take(d.Response.Usage)
		}
	}
	n := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	chatIn, chatOut := n(last.PromptTokens), max(n(last.CompletionTokens), n(last.TotalTokens)-n(last.PromptTokens))
	otherIn, otherOut := n(last.InputTokens)+n(last.CacheRead)+n(last.CacheWrite), n(last.OutputTokens)
	// The last usage read whole, as openai-python keeps it: its uncached input.
	switch {
	case whole.InputTokens != nil || whole.OutputTokens != nil || whole.CacheRead != nil || whole.CacheWrite != nil:
	case whole.PromptTokens != nil:
		c := n(whole.CacheHit)
		if whole.PromptDetails != nil {
			c = max(c, n(whole.PromptDetails.Cached))
		}
		uncached = n(whole.PromptTokens) - c
	}
	if whole.PromptTokens == nil && whole.CompletionTokens == nil && whole.InputTokens != nil && whole.CacheRead == nil && whole.CacheWrite == nil {
		c := int64(0)
		if whole.InputDetails != nil {
			c = n(whole.InputDetails.Cached)
		}
		uncached = n(whole.InputTokens) - c
	}
	hasChat := last.PromptTokens != nil || last.CompletionTokens != nil
	hasOther := last.InputTokens != nil || last.OutputTokens != nil || last.CacheRead != nil || last.CacheWrite != nil
	switch {
	case hasChat && hasOther:
		return min(chatIn, otherIn), min(chatOut, otherOut), uncached, true
	case hasChat:
		return chatIn, chatOut, uncached, true
	}
	return otherIn, otherOut, uncached, true
}

// A stream the scanner reads as ok is read as no less than encoding/json
// reads it, line by line, as SDKs keep its usage: no fewer input or output
// tokens, and no more of the input cached than the last usage says.
func FuzzSSEScannerReadsNoLessThanEncodingJSON(f *testing.F) {
	for _, s := range []string{openAIStream, anthropicStream, responsesStream,
		strings.ReplaceAll(openAIStream, "\n", "\r"), strings.ReplaceAll(anthropicStream, "\n", "\r\n"),
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":900}}}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":500,\"completion_tokens\":50}}\n\ndata: [DONE]\n\n"} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		var s sseScanner
		size := int(chunk)%13 + 1
		for p := stream; len(p) > 0; p = p[min(len(p), size):] {
			s.write(p[:min(len(p), size)])
		}
		u, ok := s.result(true)
		if !ok {
			return
		}
		in, out, uncached, rok := refStreamUsage(stream)
		if !rok {
			return
		}
		if u.InputTokens < in || u.OutputTokens < out || u.InputTokens-u.CachedInputTokens < uncached {
			t.Fatalf("%q: read %d in (%d cached), %d out; encoding/json reads at least %d in (%d uncached), %d out",
				stream, u.InputTokens, u.CachedInputTokens, u.OutputTokens, in, uncached, out)
		}
	})
}
