package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// This file reads token counts: estimates from request bodies before they are
// sent, and real usage from answers (JSON and SSE streams) as the caller
// reads them. Budget and Limiter both use it; it is the one place that parses
// these formats, and it is fuzzed.
//
// Formats (see shared/REFERENCE.md):
//   - OpenAI (and DeepSeek, and most OpenAI-compatible relays):
//     usage.prompt_tokens (includes cached), usage.completion_tokens
//     (includes reasoning), usage.prompt_tokens_details.cached_tokens;
//     DeepSeek reports cached tokens as usage.prompt_cache_hit_tokens.
//     Streams carry usage in one chunk before "data: [DONE]" when the request
//     set stream_options.include_usage; the other chunks say "usage":null.
//   - OpenAI Responses (JSON only): usage.input_tokens (includes cached),
//     usage.input_tokens_details.cached_tokens, usage.output_tokens.
//   - Anthropic: usage.input_tokens EXCLUDES cache reads and cache writes;
//     cache_read_input_tokens and cache_creation_input_tokens are counted
//     separately. Streams: message_start carries message.usage, each
//     message_delta carries cumulative usage (the last one wins, never sum),
//     message_stop ends the stream.

// maxUsageTokens is the largest token count a usage field may report; larger
// values are read as a lying or broken server (no request has ever come near
// a billion tokens), and keep cost arithmetic far from overflow.
const maxUsageTokens = 1_000_000_000

// maxUsageValue bounds a JSON answer's top-level "usage" value (and how
// much of it is kept when it spans reads). Real usage objects are a few hundred bytes;
// a larger one is read as malformed (ok false). Nothing else of a JSON answer
// is kept: it is scanned as it passes.
const maxUsageValue = 16 << 10

// maxSSELine bounds one SSE line kept while it spans reads. A longer line is
// skipped; since it might have carried usage, the stream then reports ok
// false.
const maxSSELine = 1 << 20

// Usage is the token usage one answer reports, the same whatever the
// provider's format: Budget settles to its Cost, and the demo and tests use
// it to price what a server billed. The zero value is no usage.
type Usage struct {
	// InputTokens counts the prompt, including cached tokens and cache
	// writes. Anthropic's input_tokens excludes both; they are added here so
	// that every provider reads the same.
	InputTokens int64
	// CachedInputTokens is the part of InputTokens served from the
	// provider's prompt cache (billed at the cached price).
	CachedInputTokens int64
	// CacheWriteInputTokens is the part of InputTokens written to the
	// provider's prompt cache (Anthropic's cache_creation_input_tokens,
	// billed above the input price); 0 for providers that do not say.
	CacheWriteInputTokens int64
	// OutputTokens counts the completion, including reasoning tokens.
	OutputTokens int64
}

// chatRequest is what a layer needs to know of a chat request body.
type chatRequest struct {
	Model        string
	Stream       bool
	IncludeUsage bool // stream_options.include_usage is true
	// PromptTokens is a safe upper bound of the prompt's tokens, for the
	// budget; see parseChatRequest for why it holds and when it does not.
	PromptTokens int64
	// EstimatedPromptTokens is a central estimate of the prompt's tokens
	// (about 4 bytes of content per token, at least 1), for rate limiting.
	EstimatedPromptTokens int64
	// MaxOutput is the largest of max_tokens, max_completion_tokens and
	// max_output_tokens; 0 when none is a positive number.
	MaxOutput int64
	// Choices is n, how many completions the request asks for (at least 1):
	// each may produce up to MaxOutput tokens.
	Choices int64
	// Anthropic is true when the body has fields only Anthropic's Messages
	// API uses (a top-level system, anthropic_version, stop_sequences).
	Anthropic bool
	// hasStreamOptions is true when the body has a stream_options key.
	hasStreamOptions bool
}

// Allowances added to the prompt bound for inputs whose tokens are not
// covered by their bytes (see parseChatRequest).
const (
	// Per image reference: above the largest per-image costs OpenAI (1,536
	// patches × 2.46 for its nano models, about 3,800) and Anthropic (about
	// 1,600) document. OpenAI parts name "image_url" twice, so they get two.
	imageTokenAllowance = 4_000
	toolsTokenAllowance = 1_000 // hidden tool-use system prompt (Anthropic documents ~350)
)

// tokenCount reads a JSON number leniently: anything but a positive number
// reads as 0, fractions round up and absurd values are clamped, since the
// server, not us, judges the request.
func tokenCount(b []byte) int64 {
	if len(b) == 0 || !(b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		return 0
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || !(f > 0) {
		return 0
	}
	f = min(f, maxUsageTokens)
	n := int64(f)
	if float64(n) < f {
		n++ // round a fraction up: this is an upper bound
	}
	return n
}

// jsonBool reads true, false or null (false); other values are errors.
func jsonBool(b []byte) (bool, error) {
	switch string(b) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, errJSONSyntax
}

// rawLen is the length of a raw JSON value, 0 for null.
func rawLen(b []byte) int64 {
	if string(b) == "null" {
		return 0
	}
	return int64(len(b))
}

// parseChatRequest reads a JSON chat request body (OpenAI chat completions,
// OpenAI completions and responses, or Anthropic messages). A body that is
// not a JSON object returns an error.
//
// PromptTokens is the body's length in bytes, plus allowances. Why bytes
// bound tokens: every token of a byte-level BPE tokenizer (OpenAI's,
// Anthropic's, DeepSeek's, and SentencePiece with byte fallback) stands for
// at least one byte of UTF-8 text, so text has at most as many tokens as
// bytes; the JSON carrying the text only adds bytes (quotes, escapes, keys),
// and the per-message framing a provider adds (3 to 4 tokens per message)
// is smaller than the JSON of each message ({"role":"user","content":""} is
// 28 bytes). The known exceptions are inputs whose tokens do not come from
// their bytes: an image given by URL (a 30-byte URL can cost over a thousand
// tokens), audio, files referenced by id, and hidden system prompts a
// provider adds for tools. For images and tools a fixed allowance is added
// (imageTokenAllowance per image reference, toolsTokenAllowance when tools
// are present); audio and files by reference stay exceptions, so a budget
// can be passed by their true cost, which is then charged in full.
func parseChatRequest(body []byte) (chatRequest, error) {
	// As in a JSON decoder, the last of duplicate keys wins.
	var cr chatRequest
	var maxTokens, maxCompletion, maxOutput, n int64
	var messages, system, prompt, input, tools, version, stops int64
	err := jsonMembers(body, func(k []byte, escaped bool, v []byte) error {
		switch string(unescape(k, escaped)) {
		case "model":
			if string(v) == "null" {
				return nil
			}
			s, ok := jsonString(v)
			if !ok {
				return errJSONSyntax
			}
			cr.Model = s
		case "stream":
			b, err := jsonBool(v)
			cr.Stream = b
			return err
		case "stream_options":
			cr.hasStreamOptions, cr.IncludeUsage = true, false
			if string(v) == "null" {
				return nil
			}
			return jsonMembers(v, func(k []byte, escaped bool, v []byte) error {
				if string(unescape(k, escaped)) != "include_usage" {
					return nil
				}
				b, err := jsonBool(v)
				cr.IncludeUsage = b
				return err
			})
		case "max_tokens":
			maxTokens = tokenCount(v)
		case "max_completion_tokens":
			maxCompletion = tokenCount(v)
		case "max_output_tokens":
			maxOutput = tokenCount(v)
		case "n":
			n = tokenCount(v)
		case "messages":
			messages = rawLen(v)
		case "system":
			system = rawLen(v)
		case "prompt":
			prompt = rawLen(v)
		case "input":
			input = rawLen(v)
		case "tools":
			tools = rawLen(v)
		case "anthropic_version":
			version = rawLen(v)
		case "stop_sequences":
			stops = rawLen(v)
		}
		return nil
	})
	if err != nil {
		return chatRequest{}, fmt.Errorf("httpguard: request body is not a JSON object: %w", err)
	}
	cr.MaxOutput = max(maxTokens, maxCompletion, maxOutput)
	cr.Choices = max(1, n)
	cr.Anthropic = system > 0 || version > 0 || stops > 0
	bound := int64(len(body))
	if images := bytes.Count(body, []byte(`"image`)) + bytes.Count(body, []byte(`_image"`)); images > 0 {
		bound += int64(images) * imageTokenAllowance
	}
	if tools > 0 {
		bound += toolsTokenAllowance
	}
	cr.PromptTokens = bound
	cr.EstimatedPromptTokens = max(1, (messages+system+prompt+input+tools)/4)
	return cr, nil
}

// withStreamUsage returns body with stream_options.include_usage set to
// true, so that an OpenAI-style stream reports its usage, and whether it
// changed anything. Bodies that do not stream, that already ask for usage, or
// that are Anthropic's (whose streams always carry usage) are returned as
// they are. Every other byte of the body is kept; when stream_options is
// present only its value is rewritten.
func withStreamUsage(body []byte, cr chatRequest) ([]byte, bool) {
	if !cr.Stream || cr.IncludeUsage || cr.Anthropic {
		return body, false
	}
	const opt = `"stream_options":{"include_usage":true}`
	if !cr.hasStreamOptions {
		i := bytes.IndexByte(body, '{')
		if i < 0 {
			return body, false
		}
		out := make([]byte, 0, len(body)+len(opt)+1)
		out = append(out, body[:i+1]...)
		out = append(out, opt...)
		rest := body[i+1:]
		if t := bytes.TrimLeft(rest, " \t\r\n"); len(t) > 0 && t[0] != '}' {
			out = append(out, ',')
		}
		return append(out, rest...), true
	}
	start, end, ok := topLevelValue(body, "stream_options")
	if !ok {
		return body, false
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body[start:end], &v); err != nil {
		return body, false
	}
	if v == nil { // stream_options was null
		v = map[string]json.RawMessage{}
	}
	v["include_usage"] = json.RawMessage("true")
	val, err := json.Marshal(v)
	if err != nil {
		return body, false
	}
	out := make([]byte, 0, len(body)+len(val))
	out = append(out, body[:start]...)
	out = append(out, val...)
	return append(out, body[end:]...), true
}

// topLevelValue finds the value of the last top-level key in a JSON object
// and returns its byte range.
func topLevelValue(body []byte, key string) (start, end int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, 0, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return 0, 0, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return 0, 0, false
		}
		if k, _ := t.(string); k == key {
			end = int(dec.InputOffset())
			start, ok = end-len(raw), true
		}
	}
	return start, end, ok
}

// wireUsage is a usage object in any of the formats this file reads.
type wireUsage struct {
	// OpenAI chat completions, DeepSeek.
	PromptTokens         optInt // prompt_tokens
	CompletionTokens     optInt // completion_tokens
	PromptTokensDetails  cached // prompt_tokens_details
	PromptCacheHitTokens optInt // prompt_cache_hit_tokens
	// OpenAI responses.
	InputTokensDetails cached // input_tokens_details
	// Anthropic (and OpenAI responses).
	InputTokens              optInt // input_tokens
	OutputTokens             optInt // output_tokens
	CacheReadInputTokens     optInt // cache_read_input_tokens
	CacheCreationInputTokens optInt // cache_creation_input_tokens
}

// cached is a prompt_tokens_details or input_tokens_details object.
type cached struct {
	CachedTokens optInt // cached_tokens
}

// decodeUsage reads a usage object (or null) into w. Unknown fields are
// skipped; a known field that is not an integer (or an object, for the
// details) is an error.
func decodeUsage(v []byte, w *wireUsage) error {
	if string(v) == "null" {
		return nil
	}
	return jsonMembers(v, func(k []byte, escaped bool, v []byte) error {
		var dst *optInt
		switch string(unescape(k, escaped)) {
		case "prompt_tokens":
			dst = &w.PromptTokens
		case "completion_tokens":
			dst = &w.CompletionTokens
		case "prompt_cache_hit_tokens":
			dst = &w.PromptCacheHitTokens
		case "input_tokens":
			dst = &w.InputTokens
		case "output_tokens":
			dst = &w.OutputTokens
		case "cache_read_input_tokens":
			dst = &w.CacheReadInputTokens
		case "cache_creation_input_tokens":
			dst = &w.CacheCreationInputTokens
		case "prompt_tokens_details":
			return decodeCached(v, &w.PromptTokensDetails)
		case "input_tokens_details":
			return decodeCached(v, &w.InputTokensDetails)
		default:
			return nil
		}
		return dst.parse(v)
	})
}

func decodeCached(v []byte, c *cached) error {
	if string(v) == "null" {
		return nil
	}
	return jsonMembers(v, func(k []byte, escaped bool, v []byte) error {
		if string(unescape(k, escaped)) == "cached_tokens" {
			return c.CachedTokens.parse(v)
		}
		return nil
	})
}

// optInt is a JSON integer that remembers whether it was present. A value
// that is not an integer is an error (malformed usage); null is absent.
type optInt struct {
	v   int64
	set bool
}

// parse reads a JSON integer or null.
func (o *optInt) parse(b []byte) error {
	if string(b) == "null" {
		*o = optInt{}
		return nil
	}
	// A hand parse: strconv.ParseInt(string(b)) would allocate, and this
	// runs for every field of every usage object.
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 || (b[0] == '0' && len(b) > 1) {
		return errMalformedUsage // 19+ digits are above maxUsageTokens anyway
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return errMalformedUsage
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	*o = optInt{n, true}
	return nil
}

var errMalformedUsage = errors.New("httpguard: malformed usage")

// merge overwrites u's fields with those set in v: later usage objects in a
// stream are cumulative, so the last value of each field wins.
func (u *wireUsage) merge(v *wireUsage) {
	for _, p := range [...]struct{ dst, src *optInt }{
		{&u.PromptTokens, &v.PromptTokens},
		{&u.CompletionTokens, &v.CompletionTokens},
		{&u.PromptTokensDetails.CachedTokens, &v.PromptTokensDetails.CachedTokens},
		{&u.PromptCacheHitTokens, &v.PromptCacheHitTokens},
		{&u.InputTokensDetails.CachedTokens, &v.InputTokensDetails.CachedTokens},
		{&u.InputTokens, &v.InputTokens},
		{&u.OutputTokens, &v.OutputTokens},
		{&u.CacheReadInputTokens, &v.CacheReadInputTokens},
		{&u.CacheCreationInputTokens, &v.CacheCreationInputTokens},
	} {
		if p.src.set {
			*p.dst = *p.src
		}
	}
}

// inRange reports whether every count w has is in [0, maxUsageTokens].
func (w *wireUsage) inRange() bool {
	for _, f := range [...]optInt{w.PromptTokens, w.CompletionTokens, w.PromptTokensDetails.CachedTokens,
		w.PromptCacheHitTokens, w.InputTokensDetails.CachedTokens, w.InputTokens, w.OutputTokens,
		w.CacheReadInputTokens, w.CacheCreationInputTokens} {
		if f.set && (f.v < 0 || f.v > maxUsageTokens) {
			return false
		}
	}
	return true
}

// usage normalises w. ok is false when w has no token counts, or when they
// lie: negative, above maxUsageTokens, or more cached than input tokens.
// Callers then fall back to what they reserved, which is the safe side.
func (w *wireUsage) usage() (u Usage, ok bool) {
	if !w.inRange() {
		return Usage{}, false
	}
	switch {
	case w.PromptTokens.set || w.CompletionTokens.set: // OpenAI chat, DeepSeek
		u.InputTokens, u.OutputTokens = w.PromptTokens.v, w.CompletionTokens.v
		u.CachedInputTokens = w.PromptTokensDetails.CachedTokens.v
		if h := w.PromptCacheHitTokens; h.set && (!w.PromptTokensDetails.CachedTokens.set || h.v < u.CachedInputTokens) {
			u.CachedInputTokens = h.v // when both say, the smaller (dearer) count
		}
	case w.InputTokensDetails.CachedTokens.set: // OpenAI responses: input includes cached
		u.InputTokens, u.OutputTokens = w.InputTokens.v, w.OutputTokens.v
		u.CachedInputTokens = w.InputTokensDetails.CachedTokens.v
	case w.InputTokens.set || w.OutputTokens.set: // Anthropic: input excludes cache reads and writes
		u.CachedInputTokens = w.CacheReadInputTokens.v
		u.CacheWriteInputTokens = w.CacheCreationInputTokens.v
		u.InputTokens = w.InputTokens.v + u.CachedInputTokens + u.CacheWriteInputTokens
		u.OutputTokens = w.OutputTokens.v
	default:
		return Usage{}, false
	}
	if u.CachedInputTokens+u.CacheWriteInputTokens > u.InputTokens || u.InputTokens > maxUsageTokens {
		return Usage{}, false
	}
	return u, true
}

// observeUsage wraps resp.Body so that report is called exactly once, when
// the caller reads the body to its end or closes it, with the usage found in
// the bytes the caller read (ok false when none was found, the stream was cut
// short, or the usage was malformed). What the caller reads is unchanged and
// not buffered twice. JSON answers and SSE streams (OpenAI chunks, Anthropic
// events) are both understood, told apart by Content-Type.
//
// Report is called from the goroutine that sees the end: a Read returning
// io.EOF or another error (ok false), or Close. A Close before the end still
// reports ok when what was read is complete: a JSON value that has ended (as
// when the caller used json.Decoder), or a stream that sent [DONE] or
// message_stop. Close does not read on to look for usage.
//
// A JSON answer is scanned as it passes; only its top-level "usage" value is
// decoded, where it lies in the caller's buffer, or from a copy of up to
// maxUsageValue bytes when it spans reads. SSE lines are split on \n (a trailing \r is
// dropped), comment lines are skipped, and only data lines that carry a
// non-null "usage", an "error" or an Anthropic "type" of interest are
// decoded. A data line longer than maxSSELine is skipped and makes the report
// not ok, as do an error event and a stream without [DONE] or message_stop.
// JSON split over several data lines of one event is not joined; no provider
// sends it, and it reads as malformed (ok false).
func observeUsage(resp *http.Response, report func(u Usage, ok bool)) {
	if resp.Body == nil {
		report(Usage{}, false)
		return
	}
	r := &usageReader{}
	r.observe(resp, reportFunc(report))
}

// usageReporter receives the usage a usageReader finds. An interface rather
// than a func lets a layer embed the usageReader in its per-request state
// and report to it without allocating a method value.
type usageReporter interface {
	reportUsage(u Usage, ok bool)
}

// reportFunc adapts a func to usageReporter.
type reportFunc func(Usage, bool)

func (f reportFunc) reportUsage(u Usage, ok bool) { f(u, ok) }

// observe is observeUsage into r, which must be a zero usageReader; resp.Body
// must not be nil. An SSE scanner (about 300 bytes) is allocated only for
// streams.
func (r *usageReader) observe(resp *http.Response, report usageReporter) {
	r.body, r.report = resp.Body, report
	if isEventStream(resp.Header.Get("Content-Type")) {
		r.ev = &sseUsageScanner{}
	}
	resp.Body = r
}

// isEventStream reports whether a Content-Type is text/event-stream,
// whatever its parameters and case.
func isEventStream(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// usageReader is the body observeUsage installs. Read and Close may run on
// different goroutines (net/http allows Close to abort a Read), so the
// parser's state is guarded by mu; report runs outside it.
type usageReader struct {
	body   io.ReadCloser
	report usageReporter

	mu       sync.Mutex
	reported bool
	js       jsonUsageScanner
	ev       *sseUsageScanner // nil for JSON answers
}

func (r *usageReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	r.mu.Lock()
	if r.reported {
		r.mu.Unlock()
		return n, err
	}
	if r.ev != nil {
		r.ev.write(p[:n])
	} else {
		r.js.write(p[:n])
	}
	if err == nil {
		r.mu.Unlock()
		return n, nil
	}
	r.reported = true
	var u Usage
	ok := false
	if err == io.EOF {
		u, ok = r.resultLocked(true)
	}
	r.mu.Unlock()
	r.report.reportUsage(u, ok)
	return n, err
}

func (r *usageReader) Close() error {
	err := r.body.Close()
	r.mu.Lock()
	if r.reported {
		r.mu.Unlock()
		return err
	}
	r.reported = true
	u, ok := r.resultLocked(false)
	r.mu.Unlock()
	r.report.reportUsage(u, ok)
	return err
}

func (r *usageReader) resultLocked(eof bool) (Usage, bool) {
	if r.ev != nil {
		return r.ev.result(eof)
	}
	return r.js.result()
}

// jsonUsageScanner follows a JSON answer byte by byte, tracking strings and
// nesting only, and decodes the value of the top-level "usage" key when it
// ends. The value is decoded where it lies in the caller's buffer; only a
// value split across reads is copied, so a typical answer costs no
// allocation.
type jsonUsageScanner struct {
	depth     int32
	capture   uint8 // 0 none, 1 waiting for the value, 2 capturing it
	inString  bool
	escaped   bool
	expectKey bool    // at depth 1, the next string is a key
	inKey     bool    // the current string is a top-level key
	keyLong   bool    // the current key is longer than key
	isUsage   bool    // the last top-level key was "usage"
	found     bool    // a usage value was read completely; usage holds it
	usageOK   bool    // usage was decoded, in range and consistent
	started   bool    // the top-level object started
	done      bool    // the top-level value ended
	bad       bool    // not a JSON object, or bytes after its end
	keyLen    uint8   // bytes in key
	key       [5]byte // the top-level key being read, up to len("usage") bytes
	valueLen  int32   // bytes of the usage value so far, saturating above maxUsageValue
	spilled   []byte  // the start of a usage value that spans reads
	usage     Usage
}

func (s *jsonUsageScanner) write(p []byte) {
	start := 0 // where the usage value being captured starts in p
	for i := 0; i < len(p); i++ {
		c := p[i]
		if s.bad {
			return
		}
		if s.capture == 2 && s.depth == 1 && !s.inString && (c == ',' || c == '}') {
			s.endValue(p[start:i])
		}
		if s.inString {
			if s.escaped {
				s.escaped = false
			} else if c == '\\' {
				s.escaped = true
			} else if c == '"' {
				s.inString = false
				if s.inKey {
					s.inKey = false
					s.isUsage = !s.keyLong && string(s.key[:s.keyLen]) == "usage"
				}
			} else if s.inKey {
				if int(s.keyLen) < len(s.key) {
					s.key[s.keyLen] = c
					s.keyLen++
				} else {
					s.keyLong = true
				}
			} else {
				// Skip to the next quote or backslash: string bodies are
				// most of an answer.
				j := i + 1
				for j < len(p) && p[j] != '"' && p[j] != '\\' {
					j++
				}
				i = j - 1
			}
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		if s.done {
			s.bad = true
			return
		}
		if s.capture == 1 {
			s.capture, s.valueLen, s.spilled = 2, 0, s.spilled[:0]
			start = i
		}
		switch c {
		case '"':
			if s.depth == 0 {
				s.bad = true
				return
			}
			s.inString = true
			if s.depth == 1 && s.expectKey {
				s.inKey, s.keyLen, s.keyLong, s.expectKey = true, 0, false, false
			}
		case '{', '[':
			if s.depth == 0 {
				if c != '{' {
					s.bad = true
					return
				}
				s.started = true
			}
			s.depth++
			if s.depth == 1 {
				s.expectKey = true
			}
		case '}', ']':
			s.depth--
			if s.depth == 0 {
				s.done = true
			}
			if s.depth < 0 {
				s.bad = true
				return
			}
		case ',':
			if s.depth == 1 {
				s.expectKey = true
			}
		case ':':
			if s.depth == 1 && s.isUsage {
				s.capture, s.isUsage = 1, false
			}
		default:
			if !s.started {
				s.bad = true
				return
			}
		}
	}
	if s.capture == 2 {
		s.spill(p[start:])
	}
}

// spill keeps the part of the usage value that a read ended in, within
// maxUsageValue; a longer value is counted but not kept.
func (s *jsonUsageScanner) spill(part []byte) {
	s.valueLen = int32(min(int(s.valueLen)+len(part), maxUsageValue+1))
	if s.valueLen <= maxUsageValue {
		s.spilled = append(s.spilled, part...)
	}
}

// endValue decodes the usage value whose last part is tail. As in a JSON
// decoder, a later usage key replaces an earlier one.
func (s *jsonUsageScanner) endValue(tail []byte) {
	s.capture, s.found = 0, true
	v := tail
	if s.valueLen > 0 {
		s.spill(tail)
		v = s.spilled
	} else {
		s.valueLen = int32(min(len(tail), maxUsageValue+1))
	}
	s.usage, s.usageOK = Usage{}, false
	if s.valueLen > maxUsageValue {
		return
	}
	var w wireUsage
	if decodeUsage(v, &w) == nil {
		s.usage, s.usageOK = w.usage()
	}
}

func (s *jsonUsageScanner) result() (Usage, bool) {
	if s.bad || !s.done || !s.found || !s.usageOK {
		return Usage{}, false
	}
	return s.usage, true
}

// sseUsageScanner follows an SSE stream line by line.
type sseUsageScanner struct {
	line    []byte // the start of a line that spans reads
	long    bool   // the current line exceeded maxSSELine
	lost    bool   // a line was skipped: usage may have been missed
	usage   wireUsage
	found   bool
	done    bool // [DONE] or message_stop was seen
	failed  bool // an error event or malformed usage was seen
	scratch wireUsage
}

func (s *sseUsageScanner) write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keep(p)
			return
		}
		if len(s.line) > 0 || s.long {
			s.keep(p[:i])
			if !s.long {
				s.handle(s.line)
			}
			s.line, s.long = s.line[:0], false
		} else {
			s.handle(p[:i])
		}
		p = p[i+1:]
	}
}

// keep adds p to the line that spans reads, within maxSSELine.
func (s *sseUsageScanner) keep(p []byte) {
	if s.long {
		return
	}
	if len(s.line)+len(p) > maxSSELine {
		s.long, s.lost, s.line = true, true, s.line[:0]
		return
	}
	s.line = append(s.line, p...)
}

var (
	sseData        = []byte("data:")
	sseDone        = []byte("[DONE]")
	sseUsageKey    = []byte(`"usage"`)
	sseErrorKey    = []byte(`"error"`)
	sseMessageStop = []byte(`"message_stop"`)
)

func (s *sseUsageScanner) handle(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if !bytes.HasPrefix(line, sseData) || s.done {
		return // comments, event names, ids, blank lines; and anything after the end
	}
	data := line[len(sseData):]
	if len(data) > 0 && data[0] == ' ' {
		data = data[1:]
	}
	if bytes.Equal(bytes.TrimSpace(data), sseDone) {
		s.done = true
		return
	}
	usage := hasUsage(data)
	failed := bytes.Contains(data, sseErrorKey)
	stop := bytes.Contains(data, sseMessageStop)
	if !usage && !failed && !stop {
		return
	}
	s.scratch = wireUsage{}
	var typ []byte
	err := jsonMembers(data, func(k []byte, escaped bool, v []byte) error {
		switch string(unescape(k, escaped)) {
		case "type":
			typ = v
		case "error":
			if string(v) != "null" {
				s.failed = true
			}
		case "usage":
			return decodeUsage(v, &s.scratch)
		case "message": // Anthropic's message_start
			if v[0] != '{' {
				return nil
			}
			return jsonMembers(v, func(k []byte, escaped bool, v []byte) error {
				if string(unescape(k, escaped)) == "usage" {
					return decodeUsage(v, &s.scratch)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		s.failed = true
		return
	}
	switch string(typ) {
	case `"error"`:
		s.failed = true
	case `"message_stop"`:
		s.done = true
	}
	if usage && s.scratch != (wireUsage{}) {
		if !s.scratch.inRange() {
			s.failed = true // a lying chunk spoils the stream, even if a later one looks fine
		}
		s.usage.merge(&s.scratch)
		s.found = true
	}
}

// hasUsage reports whether a data line has a "usage" key whose value is not
// null: the cheap test that spares decoding the "usage":null chunks.
func hasUsage(data []byte) bool {
	for {
		i := bytes.Index(data, sseUsageKey)
		if i < 0 {
			return false
		}
		data = bytes.TrimLeft(data[i+len(sseUsageKey):], " \t")
		if len(data) == 0 || data[0] != ':' {
			continue
		}
		data = bytes.TrimLeft(data[1:], " \t")
		if !bytes.HasPrefix(data, []byte("null")) {
			return true
		}
	}
}

func (s *sseUsageScanner) result(eof bool) (Usage, bool) {
	if eof && len(s.line) > 0 && !s.long {
		s.handle(s.line) // a last line without a newline
	}
	if !s.done || s.failed || s.lost || !s.found {
		return Usage{}, false
	}
	return s.usage.usage()
}

// usageChunkStripper removes OpenAI's usage-only chunk (non-null "usage",
// "choices":[]) from an SSE stream, for callers whose request did not ask
// for it: a layer that added stream_options.include_usage hands them the
// stream they asked for. It holds back one event at a time (up to the blank
// line that ends it); everything else passes unchanged. An event longer than
// maxSSELine is passed on as it is.
type usageChunkStripper struct {
	body    io.ReadCloser
	buf     []byte // read buffer
	event   []byte // the event being gathered
	out     []byte // bytes ready for the caller
	lineEnd int    // where the current, unfinished line of event starts
	err     error
}

func newUsageChunkStripper(body io.ReadCloser) *usageChunkStripper {
	return &usageChunkStripper{body: body}
}

func (s *usageChunkStripper) Read(p []byte) (int, error) {
	for len(s.out) == 0 && s.err == nil {
		if s.buf == nil {
			s.buf = make([]byte, 4096)
		}
		n, err := s.body.Read(s.buf)
		s.feed(s.buf[:n])
		if err != nil {
			s.err = err
			s.out, s.event = append(s.out, s.event...), s.event[:0] // an unfinished event goes as it is
		}
	}
	if len(s.out) == 0 {
		return 0, s.err
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	if len(s.out) == 0 {
		s.out = s.out[:0:cap(s.out)]
	}
	return n, nil
}

func (s *usageChunkStripper) Close() error { return s.body.Close() }

func (s *usageChunkStripper) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.event = append(s.event, p...)
			s.flushIfLong()
			return
		}
		start := s.lineEnd
		s.event = append(s.event, p[:i+1]...)
		line := s.event[start:] // with its \n
		s.lineEnd = len(s.event)
		p = p[i+1:]
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' { // a blank line ends the event
			if !isUsageOnlyEvent(s.event) {
				s.out = append(s.out, s.event...)
			}
			s.event, s.lineEnd = s.event[:0], 0
		}
	}
}

func (s *usageChunkStripper) flushIfLong() {
	if len(s.event) > maxSSELine {
		s.out = append(s.out, s.event...)
		s.event, s.lineEnd = s.event[:0], 0
	}
}

// isUsageOnlyEvent reports whether an SSE event's data is a chunk with
// non-null usage and an empty choices array.
func isUsageOnlyEvent(event []byte) bool {
	i := bytes.Index(event, sseData)
	if i < 0 || !hasUsage(event[i:]) {
		return false
	}
	j := bytes.Index(event, []byte(`"choices"`))
	if j < 0 {
		return false
	}
	rest := bytes.TrimLeft(event[j+len(`"choices"`):], " \t")
	if len(rest) == 0 || rest[0] != ':' {
		return false
	}
	rest = bytes.TrimLeft(rest[1:], " \t")
	if len(rest) == 0 || rest[0] != '[' {
		return false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	return len(rest) > 0 && rest[0] == ']'
}
