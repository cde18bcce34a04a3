package httpguard

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/bits"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// This file reads the usage an answer reports, as the caller reads the
// answer: the provider formats (one table below), and the body wrapper
// that feeds an answer to its scanner (jsonusage.go for JSON, sse.go for
// event streams). Budget and Limiter both use it.
//
// Formats (see shared/REFERENCE.md):
//   - OpenAI (and DeepSeek, and most OpenAI-compatible relays):
//     usage.prompt_tokens (includes cached), usage.completion_tokens
//     (includes reasoning), usage.prompt_tokens_details.cached_tokens;
//     the audio parts of each, prompt_tokens_details.audio_tokens and
//     completion_tokens_details.audio_tokens, billed at audio prices, and
//     the image parts, prompt_tokens_details.image_tokens and
//     completion_tokens_details.image_tokens (OpenRouter's, for the images
//     Gemini 2.5 Flash Image and gpt-5-image write), billed at image prices;
//     DeepSeek reports cached tokens as usage.prompt_cache_hit_tokens.
//     Relays serving Claude in this format count its cache writes in
//     prompt_tokens and name them: LiteLLM as cache_creation_input_tokens
//     (and prompt_tokens_details.cache_creation_tokens, split by kind in
//     its cache_creation_token_details: ephemeral_5m_input_tokens and
//     ephemeral_1h_input_tokens, the one-hour writes; the split's sum
//     counts them when no total comes with it),
//     OpenRouter as prompt_tokens_details.cache_write_tokens; they are
//     billed at the cache-write prices.
//     Streams carry usage in one chunk before "data: [DONE]" when the request
//     set stream_options.include_usage; the other chunks say "usage":null.
//     Some OpenAI-compatible APIs leave reasoning tokens out of
//     completion_tokens and count them only in usage.total_tokens (Gemini's
//     OpenAI-compatible endpoint; xAI): tokens total_tokens counts beyond
//     the input and output tokens are read as output, the dearer side.
//   - OpenAI Responses: usage.input_tokens (includes cached),
//     usage.input_tokens_details.cached_tokens, usage.output_tokens; Claude
//     served in this format (Azure AI Foundry) names its cache writes in
//     input_tokens_details.cache_write_tokens, billed at the cache-write
//     price. OpenAI's Images API (gpt-image-1) answers in this format,
//     without cached_tokens, and names the image parts of its input and
//     output: input_tokens_details.image_tokens and
//     output_tokens_details.image_tokens, billed at image prices. Streams
//     carry it in the response object of response.completed (or
//     response.incomplete), which ends them; there is no [DONE]. The calls
//     of server tools are the items of the answer's (or response object's)
//     output whose type records one (see countOutputCalls).
//   - Anthropic: usage.input_tokens EXCLUDES cache reads and cache writes;
//     cache_read_input_tokens and cache_creation_input_tokens are counted
//     separately; cache_creation.ephemeral_1h_input_tokens is the part of
//     the cache writes kept for an hour, billed higher, and
//     ephemeral_5m_input_tokens the rest: a usage that names them without
//     cache_creation_input_tokens, their sum, wrote them all the same.
//     Streams: message_start carries message.usage, each message_delta carries
//     cumulative usage (never sum; a count that falls, as a relay's
//     placeholder 0, keeps its larger value), message_stop ends the stream.
//     Calls of server tools billed per call are counted in
//     usage.server_tool_use (web_search_requests, web_fetch_requests),
//     which OpenRouter reports too; Perplexity counts its searches in
//     usage.num_search_queries, read as web searches. usage.inference_geo says where the
//     answer ran: a workspace's default geo may run a request that named
//     none in the US, billed at 1.1 times (see inferenceGeo). A data line
//     may hold both a message's usage and a top-level one: SDKs read one
//     or the other by the event's type, so both are merged, the dearer.
//   - What the answer cost: OpenRouter says in usage.cost (any format)
//     what it billed, in dollars (its credits), all in: the provider it
//     routed to, whose prices may be above the table's, and its plugins'
//     fees. The answer is charged at least that (see readCost).
//   - The service tier: OpenAI answers say which tier ran them in a
//     top-level "service_tier" ("default", "priority", "flex", "scale"):
//     in a chat completion, in every chunk of its stream, and in a
//     Responses answer (streamed, in its response object). An answer that
//     ran at Priority is billed at Priority prices, also when the request
//     did not ask for it (a project whose default tier is Priority), so it
//     is read (see tierReading); other tiers change nothing.
//
// A usage holding the keys of two formats (a relay whose usage type has
// both, zeros in the one it did not fill) is read in each, and the reading
// that counts more tokens is kept.
//
// Keys are decoded with their escapes ("\u0075sage" is usage). Where
// decoders would read a usage object differently (see request.go: a key in
// another case, a null after a count, a repeated object that drops a
// count), the usage is not ok: the Budget charges its reservation, or the
// dearer of the readings when that costs more (see usageReadings.dearest).

// maxUsageTokens is the largest token count a usage field may report; larger
// values are read as a lying or broken server (no request has ever come near
// a billion tokens), and keep cost arithmetic far from overflow.
const maxUsageTokens = 1_000_000_000

// maxUsageValue bounds a usage value (and an Anthropic message object,
// which holds one, and is kept while it spans reads). Real usage objects
// are a few hundred bytes; a larger one is not trusted (ok false: its
// counts are charged only when they cost more than the reservation), and a
// message object that outgrows it is malformed.
// Nothing else of an answer is kept: it is scanned as it passes.
const maxUsageValue = 16 << 10

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
	// provider's prompt cache (Anthropic's cache_creation_input_tokens, or
	// the sum of its cache_creation object's parts, also in the
	// OpenAI-style usage of relays serving Claude, or OpenRouter's
	// cache_write_tokens, or input_tokens_details.cache_write_tokens in
	// Responses-format usage, as Azure AI Foundry serves Claude; billed
	// above the input price); 0 for providers that do not say.
	CacheWriteInputTokens int64
	// CacheWrite1hInputTokens is the part of CacheWriteInputTokens written
	// to Anthropic's one-hour cache (cache_creation.ephemeral_1h_input_tokens),
	// billed above the five-minute cache writes.
	CacheWrite1hInputTokens int64
	// OutputTokens counts the completion, including reasoning tokens (and
	// any tokens usage.total_tokens counts beyond input and output, as
	// APIs that report reasoning only there bill them).
	OutputTokens int64
	// AudioInputTokens is the part of InputTokens that is audio (OpenAI's
	// prompt_tokens_details.audio_tokens), billed at the audio input price.
	AudioInputTokens int64
	// AudioOutputTokens is the part of OutputTokens that is audio (OpenAI's
	// completion_tokens_details.audio_tokens), billed at the audio output
	// price.
	AudioOutputTokens int64
	// ImageInputTokens is the part of InputTokens that is images, where
	// the usage counts them apart (prompt_tokens_details.image_tokens in
	// the chat format; input_tokens_details.image_tokens in OpenAI's
	// Images and Responses formats), billed at the image input price; 0
	// for usage that does not say.
	ImageInputTokens int64
	// ImageOutputTokens is the part of OutputTokens that is images
	// (completion_tokens_details.image_tokens, as OpenRouter reports the
	// images Gemini and gpt-5-image write; output_tokens_details.image_tokens
	// in OpenAI's Images format), billed at the image output price; 0 for
	// usage that does not say.
	ImageOutputTokens int64
	// ToolCalls counts the calls of server tools the answer reports,
	// billed per call besides the tokens (see BudgetConfig.ToolPrices).
	ToolCalls ToolCalls

	counted toolCounts // the kinds of ToolCalls the answer counted
	// ranAtPriority is set when the answer says it ran at Priority
	// (whether or not its usage could be read).
	ranAtPriority bool
	// ranIn is where the answer says it ran (Anthropic's
	// usage.inference_geo), whether or not its usage could be read.
	ranIn inferenceGeo
	// mixed is set when u mixes two readings of a usage (see coverBoth).
	mixed bool
	// servedBy is the model the answer says served it, whether or not its
	// usage could be read (see modelHash), as an exact decoder reads it;
	// servedFolded is the model encoding/json reads, when it differs
	// (see modelReading), or 0.
	servedBy, servedFolded modelHash
	// servedFirst is the model the first line of a stream that named one
	// says served it, when it is neither of those (a stream's chunks that
	// disagree: openai-python keeps the first chunk's model), or 0.
	servedFirst modelHash
	// billed is what the answer says it was billed (OpenRouter's
	// usage.cost, in dollars), rounded up to the micro-dollar; 0 when it
	// does not say. The Budget charges at least it.
	billed Money
}

// servedModels are the models u says served it: servedBy, servedFolded
// and servedFirst, each 0 for none.
func (u *Usage) servedModels() [3]modelHash {
	return [...]modelHash{u.servedBy, u.servedFolded, u.servedFirst}
}

// noTokens reports whether u reports nothing, whatever tier it ran at and
// wherever it ran.
func (u Usage) noTokens() bool {
	u.ranAtPriority, u.ranIn, u.mixed, u.servedBy, u.servedFolded, u.servedFirst = false, geoGlobal, false, 0, 0, 0
	return u == Usage{}
}

// modelHash names the model an answer says served it (its "model" value):
// a relay's own fallback, or a router such as openrouter/auto, serves a
// request with a model other than the one it named, and bills that
// model's prices (see budgetAttempt.answerCharge). It is a hash of the name, so
// that the scanners keep it in four bytes; zero when the answer names
// none, or spells it in more than maxModelValue bytes (no provider does).
// A name spelled with escapes is hashed as encoding/json decodes it: PHP's
// json_encode writes each slash escaped ("openai\/gpt-4.1"). Two names of
// one hash are both priced, the dearer side. A model key spelled in
// another case ("Model", as encoding/json writes an untagged field) is
// read as well: an answer whose decoders would read different models is
// priced at both, the dearer side (see modelReading).
type modelHash uint32

// modelReading is the model an answer names as two decoders read it:
// exact, the last "model" value, which decoders such as Python's and
// JavaScript's read; and folded, the last value naming a model of a key
// "model" in any case, which encoding/json reads (it matches keys in any
// case, the last wins, and a null leaves the field as it was). They
// differ only when a key is spelled in another case, or a null follows.
type modelReading struct{ exact, folded modelHash }

// read reads h, the value of a model key that matched as m.
func (r *modelReading) read(h modelHash, m nameMatch) {
	if m == exactMatch {
		r.exact = h
	}
	if h != 0 {
		r.folded = h
	}
}

// merge takes what a later object (a stream's line, or a line's
// response object) read, where it named a model.
func (r *modelReading) merge(later modelReading) {
	if later.exact != 0 {
		r.exact = later.exact
	}
	if later.folded != 0 {
		r.folded = later.folded
	}
}

// setIn sets u's servedBy and servedFolded.
func (r modelReading) setIn(u *Usage) {
	u.servedBy = r.exact
	if r.folded != r.exact {
		u.servedFolded = r.folded
	}
}

// hashModel returns the modelHash of a model's name, never zero.
func hashModel[T ~string | ~[]byte](name T) modelHash {
	h, _ := hashModelWords(name)
	return h
}

// readModel reads a model value v, whole unless it was longer than
// maxModelValue: a string, or zero.
func readModel(v []byte, whole bool) modelHash {
	if !whole || len(v) < 2 || v[0] != '"' {
		return 0
	}
	if h, backslash := hashModelWords(v[1 : len(v)-1]); !backslash {
		return h
	}
	return hashEscapedModel(v)
}

// hashEscapedModel is hashModel of the name the string value v (with its
// quotes) spells with escapes, decoded as encoding/json decodes it; zero
// when v is not a valid string.
func hashEscapedModel(v []byte) modelHash {
	if end, _ := quoteEnd(v, 1); end != len(v)-1 {
		return 0
	}
	var buf [maxModelValue]byte // a decoded name is no longer than v, but for invalid UTF-8
	return hashModel(appendUnquoted(buf[:0], v[1:len(v)-1]))
}

// hashModelWords is hashModel, which reads name eight bytes at a time (the
// last eight overlapping those before; a name shorter than eight, in two
// overlapping halves or a byte at a time), and whether name holds a
// backslash, found in the same words.
func hashModelWords[T ~string | ~[]byte](name T) (h modelHash, backslash bool) {
	const mul = 0x9e3779b97f4a7c15
	n := len(name)
	var x, esc uint64
	for i := 0; i+8 < n; i += 8 {
		w := wordAt(name, i)
		x, esc = (x^w)*mul, esc|hasByte(w, '\\')
		x ^= x >> 29
	}
	var w uint64
	switch {
	case n >= 8:
		w = wordAt(name, n-8)
	case n >= 4:
		w = uint64(halfAt(name, 0)) | uint64(halfAt(name, n-4))<<32
	default:
		for i := range n {
			w |= uint64(name[i]) << (8 * i)
		}
		w |= highs &^ (1<<(8*n) - 1) // no zero bytes for hasByte to take for '\\'
	}
	// The length is mixed in after the bytes: xored into the first word,
	// it was traded for the first byte ("o3-mini" hashed as "`3-mmini").
	x = ((x^w)*mul ^ uint64(n)) * mul
	x ^= x >> 32
	return modelHash(max(uint32(x), 1)), esc|hasByte(w, '\\') != 0
}

// hasByte flags (with its high bit) the bytes of w that are c: one at
// least when w holds c.
func hasByte(w uint64, c byte) uint64 {
	x := w ^ lows*uint64(c)
	return (x - lows) &^ x & highs
}

// wordAt returns the eight bytes of s at s[i], little-endian.
func wordAt[T ~string | ~[]byte](s T, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// halfAt returns the four bytes of s at s[i], little-endian.
func halfAt[T ~string | ~[]byte](s T, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// inferenceGeo is where an answer says it ran, as Anthropic's
// usage.inference_geo reports it: a workspace whose default geo is "us"
// runs requests that name none in the US, billed at 1.1 times the
// model's prices. The dearer reading is the larger.
type inferenceGeo uint8

const (
	geoGlobal inferenceGeo = iota // "global", null, or not said
	geoUS                         // "us"
	geoOther                      // any other value: a region still to come
)

// suffix is the PriceTable key suffix of the geo (see tier): "" when it
// has none the Budget knows.
func (g inferenceGeo) suffix() string {
	if g == geoUS {
		return "@us"
	}
	return ""
}

// readGeo reads an inference_geo value; a value that is not a string is
// a region not known, the dearer reading.
func readGeo(v []byte) inferenceGeo {
	switch s, ok := jsonString(v); {
	case ok && s == "global":
		return geoGlobal
	case ok && s == "us":
		return geoUS
	}
	return geoOther
}

// tierReading follows the top-level "service_tier" members of one JSON
// object, as decoders read them: encoding/json takes the last string
// value of a key in any case (it keeps what it had on null, or a value of
// another type); an exact decoder takes the last value of the exact key.
// The object ran at Priority when either reading says "priority" (escapes
// decoded; the dearer reading). The zero value has read nothing.
type tierReading struct {
	decoded bool // encoding/json's reading is "priority"
	exact   bool // an exact decoder's reading is "priority"
}

// maxTierValue bounds the service_tier value read: "priority" takes 50
// bytes at most, each letter escaped. A longer value is a string that is
// not "priority", or not a string: encoding/json's reading is kept, the
// dearer side.
const maxTierValue = 64

// add reads v, the value of a service_tier key that matched as m; whole is
// false when v was longer than maxTierValue.
func (r *tierReading) add(m nameMatch, v []byte, whole bool) {
	str := whole && len(v) >= 2 && v[0] == '"'
	// Only escapes can spell "priority" otherwise.
	priority := str && (string(v) == `"priority"` ||
		bytes.IndexByte(v, '\\') >= 0 && matchName(v[1:len(v)-1], true, "priority") == exactMatch)
	if str {
		r.decoded = priority
	}
	if m == exactMatch {
		r.exact = priority
	}
}

// priority reports whether the object says it ran at Priority.
func (r *tierReading) priority() bool { return r.decoded || r.exact }

// usageField is a token count a usage object may carry, in any format.
type usageField uint8

const (
	promptTokens                usageField = iota // OpenAI chat, DeepSeek
	completionTokens                              // OpenAI chat, DeepSeek
	promptCachedTokens                            // OpenAI chat
	promptCacheHitTokens                          // DeepSeek
	inputTokens                                   // Anthropic, OpenAI responses
	inputCachedTokens                             // OpenAI responses
	outputTokens                                  // Anthropic, OpenAI responses
	cacheReadInputTokens                          // Anthropic
	cacheCreationInputTokens                      // Anthropic
	cacheCreation1hTokens                         // Anthropic
	totalTokens                                   // OpenAI chat and responses
	promptAudioTokens                             // OpenAI chat
	completionAudioTokens                         // OpenAI chat
	webSearchRequests                             // Anthropic (server tools)
	webFetchRequests                              // Anthropic (server tools)
	promptCacheWriteTokens                        // OpenRouter (chat)
	promptCacheCreationTokens                     // LiteLLM (chat)
	promptCacheCreation1hTokens                   // LiteLLM (chat)
	inputCacheWriteTokens                         // Azure AI Foundry (responses)
	reasoningTokens                               // Perplexity: billed apart from completion_tokens
	citationTokens                                // Perplexity: billed apart from prompt_tokens
	promptImageTokens                             // OpenAI chat
	completionImageTokens                         // OpenRouter (chat)
	inputImageTokens                              // OpenAI images and responses
	outputImageTokens                             // OpenAI images
	searchQueries                                 // Perplexity: its searches, billed per query
	completionReasoningTokens                     // OpenAI chat: within completion_tokens; xAI: beside it
	cacheCreation5mTokens                         // Anthropic: the writes not kept an hour
	promptCacheCreation5mTokens                   // LiteLLM (chat): likewise
	promptCacheMissTokens                         // DeepSeek: the input not cached
	usageGeo                                      // Anthropic: where it ran, not a count (see inferenceGeo)
	usageCost                                     // OpenRouter: what it billed, in micro-dollars, not a count (see readCost)
	// The sums over usage.iterations of its counts (Anthropic; see
	// readIterations): no key of their own.
	iterInputTokens
	iterOutputTokens
	iterCacheReadTokens
	iterCacheWriteTokens
	// usageIterations is last: it reads into the sums above, and holds
	// nothing of its own in a wireUsage (see wireCounts).
	usageIterations // Anthropic: an array, not a count (see readIterations)
	usageFieldCount
)

// wireCounts is the number of fields a wireUsage holds: all but
// usageIterations.
const wireCounts = usageIterations

// iterationCounts are the sums readIterations reads (bit f for count f).
const iterationCounts = 1<<iterInputTokens | 1<<iterOutputTokens | 1<<iterCacheReadTokens | 1<<iterCacheWriteTokens

// usageFields says where each count sits: its key, in the usage object or
// in the object under parent (a path of keys, joined by "/"); no key for
// the sums an iterations array holds.
var usageFields = [usageFieldCount]struct{ parent, key string }{
	promptTokens:                {"", "prompt_tokens"},
	completionTokens:            {"", "completion_tokens"},
	promptCachedTokens:          {"prompt_tokens_details", "cached_tokens"},
	promptCacheHitTokens:        {"", "prompt_cache_hit_tokens"},
	inputTokens:                 {"", "input_tokens"},
	inputCachedTokens:           {"input_tokens_details", "cached_tokens"},
	outputTokens:                {"", "output_tokens"},
	cacheReadInputTokens:        {"", "cache_read_input_tokens"},
	cacheCreationInputTokens:    {"", "cache_creation_input_tokens"},
	cacheCreation1hTokens:       {"cache_creation", "ephemeral_1h_input_tokens"},
	totalTokens:                 {"", "total_tokens"},
	promptAudioTokens:           {"prompt_tokens_details", "audio_tokens"},
	completionAudioTokens:       {"completion_tokens_details", "audio_tokens"},
	webSearchRequests:           {"server_tool_use", "web_search_requests"},
	webFetchRequests:            {"server_tool_use", "web_fetch_requests"},
	promptCacheWriteTokens:      {"prompt_tokens_details", "cache_write_tokens"},
	promptCacheCreationTokens:   {"prompt_tokens_details", "cache_creation_tokens"},
	promptCacheCreation1hTokens: {"prompt_tokens_details/cache_creation_token_details", "ephemeral_1h_input_tokens"},
	inputCacheWriteTokens:       {"input_tokens_details", "cache_write_tokens"},
	reasoningTokens:             {"", "reasoning_tokens"},
	citationTokens:              {"", "citation_tokens"},
	promptImageTokens:           {"prompt_tokens_details", "image_tokens"},
	completionImageTokens:       {"completion_tokens_details", "image_tokens"},
	inputImageTokens:            {"input_tokens_details", "image_tokens"},
	outputImageTokens:           {"output_tokens_details", "image_tokens"},
	searchQueries:               {"", "num_search_queries"},
	completionReasoningTokens:   {"completion_tokens_details", "reasoning_tokens"},
	cacheCreation5mTokens:       {"cache_creation", "ephemeral_5m_input_tokens"},
	promptCacheCreation5mTokens: {"prompt_tokens_details/cache_creation_token_details", "ephemeral_5m_input_tokens"},
	promptCacheMissTokens:       {"", "prompt_cache_miss_tokens"},
	usageGeo:                    {"", "inference_geo"},
	usageCost:                   {"", "cost"},
	usageIterations:             {"", "iterations"},
}

// wireUsage is what usage objects say: each count, and which are present.
// A count out of [0, maxUsageTokens] is kept as -1 or maxUsageTokens+1:
// all that matters of it is that it lies. Each count is held plus
// wireOffset, so that 0 is a count absent and the zero value holds none;
// set says which are present, so that those alone are checked.
type wireUsage struct {
	n   [wireCounts]int32
	set uint64 // bit f: count f is present (n[f] != 0)
}

// set, and the objects' below, have a bit for each count.
const _ = uint64(1) << (wireCounts - 1)

// wireOffset is added to each count held: the smallest, -1, is held as 1.
const wireOffset = 2

func (w *wireUsage) has(f usageField) bool { return w.set&(1<<f) != 0 }

// get returns count f, 0 when absent.
func (w *wireUsage) get(f usageField) int64 {
	if w.n[f] == 0 {
		return 0
	}
	return int64(w.n[f]) - wireOffset
}

func (w *wireUsage) put(f usageField, v int64) {
	w.n[f], w.set = int32(min(max(v, -1), maxUsageTokens+1)+wireOffset), w.set|1<<f
}

func (w *wireUsage) unset(f usageField) { w.n[f], w.set = 0, w.set&^(1<<f) }

// countsNothing reports whether no value w holds is above zero.
func (w *wireUsage) countsNothing() bool {
	for _, n := range w.n {
		if n > wireOffset {
			return false
		}
	}
	return true
}

// equal reports whether w and v hold the same counts: those set says
// they hold (the others are 0 in both).
func (w *wireUsage) equal(v *wireUsage) bool {
	if w.set != v.set {
		return false
	}
	for set := w.set; set != 0; set &= set - 1 {
		if f := bits.TrailingZeros64(set); w.n[f] != v.n[f] {
			return false
		}
	}
	return true
}

// geo is where the usage says the answer ran.
func (w *wireUsage) geo() inferenceGeo { return inferenceGeo(w.get(usageGeo)) }

// clear unsets the counts held in an object (bit f of below for count
// f: see usageObject.below).
func (w *wireUsage) clear(below uint64) {
	for ; below != 0; below &= below - 1 {
		w.unset(usageField(bits.TrailingZeros64(below)))
	}
}

// merge folds v, a later usage object of the same stream, into w. Stream
// usage is cumulative (Anthropic's message_delta repeats message_start's
// counts), so a count never falls: each keeps the largest value reported,
// and a relay's placeholder 0 in a later event cannot erase what an
// earlier one said. The cached part of an OpenAI-style input, a discount,
// is the exception: there the last value wins, as a larger one would lower
// the cost; and a later object that counts the input again (not a relay's
// placeholder 0) but names no cached part of it says none was cached, as
// SDKs read the last usage whole: also when it counts less input than the
// count kept, which its discount would otherwise make cost less than the
// last usage alone.
func (w *wireUsage) merge(v *wireUsage) {
	if v.get(promptTokens) > 0 && !v.has(promptCachedTokens) && !v.has(promptCacheHitTokens) {
		w.unset(promptCachedTokens)
		w.unset(promptCacheHitTokens)
	}
	if v.get(inputTokens) > 0 && !v.has(inputCachedTokens) {
		w.unset(inputCachedTokens)
	}
	for f := range wireCounts {
		switch {
		case !v.has(f):
		case f == promptCachedTokens || f == promptCacheHitTokens || f == inputCachedTokens || !w.has(f):
			w.put(f, v.get(f))
		default:
			w.put(f, max(w.get(f), v.get(f)))
		}
	}
}

// foldTotal adds to w's output count the tokens its total counts beyond
// its input and output, which usage reads as output: a reading that mixes
// w's counts with another's (merge, dearest), each the larger, would
// otherwise read fewer of them as output once the other's input is the
// larger, and cost less than w alone (the total's extra tokens cost the
// output price, the input tokens that hid them less). The count raised is
// the one of the format w is read in: w reads as it did, or is left as it
// was.
func (w *wireUsage) foldTotal() {
	if !w.has(totalTokens) {
		return
	}
	var u Usage
	if !w.readUsage(&u) || u.OutputTokens > maxUsageTokens {
		return
	}
	chat, other := w.has(promptTokens) || w.has(completionTokens), w.hasResponsesOrAnthropicTokens()
	for _, f := range [...]usageField{completionTokens, outputTokens} {
		out := u.OutputTokens
		if f == completionTokens {
			out -= w.get(reasoningTokens) // which tokens adds to completion_tokens (Perplexity's)
		}
		if f == completionTokens && !chat || f == outputTokens && !other || out <= w.get(f) {
			continue // a count of a format w does not hold would change how the readings mixed read
		}
		v, folded := *w, Usage{}
		v.put(f, out)
		if v.readUsage(&folded) && folded == u {
			*w = v
			return
		}
	}
}

// inRange reports whether every count w has is in [0, maxUsageTokens]; a
// total, a sum of counts, may be above (usage reads it as no more than
// maxUsageTokens+1).
func (w *wireUsage) inRange() bool {
	for set := w.set; set != 0; set &= set - 1 {
		f := bits.TrailingZeros64(set)
		if n := w.n[f]; n < wireOffset || n > maxUsageTokens+wireOffset && usageField(f) != totalTokens {
			return false
		}
	}
	return true
}

// usage normalises w. ok is false when w has no token counts, or when they
// lie: negative, above maxUsageTokens, more cached or audio than input
// tokens, or more audio than output tokens.
// Callers then fall back to what they reserved, which is the safe side.
func (w *wireUsage) usage() (u Usage, ok bool) {
	ok = w.readUsage(&u)
	return u, ok
}

// readUsage is usage into u, which must be zero, in place (a Usage
// returned is copied at each step): it leaves u zero when not ok.
func (w *wireUsage) readUsage(u *Usage) (ok bool) {
	if w.set&^plainChatCounts == 0 && w.set&^(1<<totalTokens) != 0 {
		return w.readPlainChat(u)
	}
	return w.readAnyUsage(u)
}

// plainChatCounts are the counts most chat answers' usage holds, and no
// other: prompt_tokens, completion_tokens, total_tokens.
const plainChatCounts = 1<<promptTokens | 1<<completionTokens | 1<<totalTokens

// readPlainChat is readUsage of a usage that holds plainChatCounts alone,
// prompt or completion tokens among them: what readAnyUsage reads of it,
// without the cases of the other formats and counts.
func (w *wireUsage) readPlainChat(u *Usage) (ok bool) {
	in, out, total := w.get(promptTokens), w.get(completionTokens), w.get(totalTokens)
	if in < 0 || out < 0 || total < 0 || in > maxUsageTokens || out > maxUsageTokens {
		return false
	}
	u.InputTokens, u.OutputTokens = in, max(out, total-in) // the total's extra tokens are output
	return true
}

// readAnyUsage is readUsage of any usage.
func (w *wireUsage) readAnyUsage(u *Usage) (ok bool) {
	if !w.inRange() {
		return false
	}
	ok = w.tokens(u)
	if (w.has(promptTokens) || w.has(completionTokens)) && w.hasResponsesOrAnthropicTokens() {
		// A usage with the keys of two formats (a relay whose usage type
		// holds both, as new-api's does, zeros in the format it did not
		// fill): SDKs read one or the other by the API they call, so the
		// other format is read too. A reading of no tokens is the format
		// not filled; when both count tokens, u is made to cost at least
		// what either reading costs.
		other := *w
		other.unset(promptTokens)
		other.unset(completionTokens)
		var o Usage
		switch {
		case !other.tokens(&o), o.InputTokens+o.OutputTokens == 0:
		case u.InputTokens+u.OutputTokens == 0:
			*u = o
		default:
			// Each reading with the total's extra tokens as its own
			// output, before the two are mixed.
			w.addTotal(u)
			w.addTotal(&o)
			u.coverBoth(&o)
		}
	}
	if !ok {
		*u = Usage{}
		return false
	}
	switch {
	case w.has(webSearchRequests):
		u.ToolCalls.WebSearch, u.counted = w.get(webSearchRequests), u.counted|1<<webSearch
	case w.has(searchQueries): // Perplexity's searches (sonar-deep-research bills each)
		u.ToolCalls.WebSearch, u.counted = w.get(searchQueries), u.counted|1<<webSearch
	}
	if w.has(webFetchRequests) {
		u.ToolCalls.WebFetch, u.counted = w.get(webFetchRequests), u.counted|1<<webFetch
	}
	// Tokens the total counts beyond input and output were billed without
	// the usage saying as what (reasoning left out of completion_tokens):
	// output, the dearer side.
	w.addTotal(u)
	if u.CachedInputTokens+u.CacheWriteInputTokens > u.InputTokens || u.InputTokens > maxUsageTokens ||
		u.AudioInputTokens > u.InputTokens || u.AudioOutputTokens > u.OutputTokens ||
		u.ImageInputTokens > u.InputTokens || u.ImageOutputTokens > u.OutputTokens {
		*u = Usage{}
		return false
	}
	u.ranIn = w.geo()
	u.billed = Money(w.get(usageCost)) * 1000
	return true
}

// addTotal reads the tokens w's total counts beyond u's input and output
// as u's output.
func (w *wireUsage) addTotal(u *Usage) {
	if extra := w.get(totalTokens) - u.InputTokens - u.OutputTokens; extra > 0 {
		u.OutputTokens += extra
	}
}

// coverBoth makes u, one reading of a usage, cost at least what u and o,
// another, cost, at any prices that are not negative (a cached input
// dearer than input, cache writes or audio cheaper than text): each kind
// of token Cost prices apart (text input, cached input, each kind of
// cache write, audio and image input; text, audio and image output) the
// larger count of the two, and the input and output their sums, so that
// u counts as many of each kind as either reading. Each count stays
// within the one it is part of, as it is in each reading. u is marked
// mixed when its input is above a reading's: it may pass a long-context
// size that the reading's does not (see costAt).
func (u *Usage) coverBoth(o *Usage) {
	low := min(u.InputTokens, o.InputTokens)
	mixed := u.mixed || o.mixed
	var in, out [6]int64
	u.kinds(&in, &out)
	var oin, oout [6]int64
	o.kinds(&oin, &oout)
	for i := range in {
		in[i], out[i] = max(in[i], oin[i]), max(out[i], oout[i])
	}
	u.CachedInputTokens, u.CacheWriteInputTokens, u.CacheWrite1hInputTokens = in[1], in[2]+in[3], in[3]
	u.AudioInputTokens, u.ImageInputTokens = in[4], in[5]
	u.InputTokens = in[0] + in[1] + in[2] + in[3] + in[4] + in[5]
	u.AudioOutputTokens, u.ImageOutputTokens = out[1], out[2]
	u.OutputTokens = out[0] + out[1] + out[2]
	u.mixed = mixed || u.InputTokens > low
}

// kinds counts u's tokens of each kind as Cost prices them (see addUsage):
// in, its text input, cached input, five-minute and one-hour cache
// writes, audio and image input; out, its text, audio and image output.
func (u *Usage) kinds(in, out *[6]int64) {
	text := u.InputTokens - u.CachedInputTokens - u.CacheWriteInputTokens
	media := u.AudioInputTokens + u.ImageInputTokens
	in[0] = max(text-media, 0)
	// Media also cached counted as both, which costs at least the dearer.
	in[1] = max(u.CachedInputTokens, 0)
	in[2], in[3] = u.CacheWriteInputTokens-u.CacheWrite1hInputTokens, u.CacheWrite1hInputTokens
	in[4], in[5] = u.AudioInputTokens, u.ImageInputTokens
	out[0] = max(u.OutputTokens-u.AudioOutputTokens-u.ImageOutputTokens, 0)
	out[1], out[2] = u.AudioOutputTokens, u.ImageOutputTokens
}

// hasResponsesOrAnthropicTokens reports whether w has a count that
// tokens reads in the OpenAI Responses or the Anthropic format.
func (w *wireUsage) hasResponsesOrAnthropicTokens() bool {
	return w.has(inputCachedTokens) || w.has(inputCacheWriteTokens) || w.has(inputTokens) || w.has(outputTokens) ||
		w.set&iterationCounts != 0
}

// readsAmiss reports whether w names no count of its input (a relay that
// drops Anthropic's message_start, whose usage alone holds input_tokens,
// or writes output_tokens alone: the prompt was billed, and would read as
// zero) or of its output (prompt_tokens alone), or, read as an OpenAI chat
// usage alone, counts more cache reads (cache_read_input_tokens) than
// prompt_tokens, which holds them, or more DeepSeek cache hits and misses
// (prompt_cache_hit_tokens, prompt_cache_miss_tokens) than prompt_tokens,
// their sum: its counts do not add up, and tokens reads them the dearer
// way (as Anthropic's; the hits and misses as the input). The answer is
// charged its reservation, or that reading when it costs more.
func (w *wireUsage) readsAmiss() bool {
	return w.set&inputTokenCounts == 0 || w.set&outputTokenCounts == 0 ||
		(w.get(cacheReadInputTokens) > w.get(promptTokens) ||
			w.get(promptCacheHitTokens)+w.get(promptCacheMissTokens) > w.get(promptTokens)) &&
			(w.has(promptTokens) || w.has(completionTokens)) && !w.hasResponsesOrAnthropicTokens()
}

// inputTokenCounts are the counts that say how much input a usage was billed,
// zero included: the input itself, in any format; Anthropic's cache reads
// and writes, which its input_tokens leaves out (a relay may omit an
// input_tokens of 0); the sums of usage.iterations; and total_tokens,
// whose tokens beyond the output are read as output.
const inputTokenCounts = 1<<promptTokens | 1<<inputTokens | 1<<cacheReadInputTokens | 1<<cacheCreationInputTokens |
	1<<cacheCreation5mTokens | 1<<cacheCreation1hTokens | 1<<totalTokens | iterationCounts

// outputTokenCounts are the counts that say how much output a usage was
// billed, zero included: the output, in any format; the sums of
// usage.iterations; and total_tokens, whose tokens beyond the input are
// read as output (an embedding's usage holds prompt_tokens and
// total_tokens).
const outputTokenCounts = 1<<completionTokens | 1<<outputTokens | 1<<totalTokens | iterationCounts

// cacheCreationSplit is the sum of the cache writes Anthropic's
// cache_creation object splits by how long they are kept, which is
// cache_creation_input_tokens; each at most maxUsageTokens+1.
func (w *wireUsage) cacheCreationSplit() int64 {
	return w.get(cacheCreation5mTokens) + w.get(cacheCreation1hTokens)
}

// chatTokenParts are the counts of the parts of an OpenAI chat usage's
// tokens that tokens reads (bit f for count f).
const chatTokenParts = 1<<promptCachedTokens | 1<<promptAudioTokens | 1<<completionAudioTokens | 1<<promptCacheHitTokens |
	1<<cacheCreation1hTokens | 1<<promptCacheCreation1hTokens | 1<<cacheCreationInputTokens | 1<<promptCacheWriteTokens |
	1<<promptCacheCreationTokens | 1<<citationTokens | 1<<reasoningTokens | 1<<promptImageTokens | 1<<completionImageTokens |
	1<<cacheCreation5mTokens | 1<<promptCacheCreation5mTokens | 1<<cacheReadInputTokens | 1<<promptCacheMissTokens

// tokens is usage's reading of the token counts into u, which must be
// zero, in the format w's keys say: OpenAI chat, OpenAI Responses or
// Anthropic. ok is false when w has none.
func (w *wireUsage) tokens(u *Usage) (ok bool) {
	switch {
	case w.has(promptTokens) || w.has(completionTokens): // OpenAI chat, DeepSeek
		u.InputTokens, u.OutputTokens = w.get(promptTokens), w.get(completionTokens)
		// Reasoning is a part of completion_tokens (OpenAI's), or was
		// billed beside it (xAI's, whose total_tokens says so, but relays
		// rewrite or drop it): a count above completion_tokens cannot be
		// a part of it.
		if r := w.get(completionReasoningTokens); r > u.OutputTokens {
			u.OutputTokens += r
		}
		if w.set&chatTokenParts == 0 { // most answers: the parts below are 0
			break
		}
		u.CachedInputTokens = w.get(promptCachedTokens)
		u.AudioInputTokens, u.AudioOutputTokens = w.get(promptAudioTokens), w.get(completionAudioTokens)
		u.ImageInputTokens, u.ImageOutputTokens = w.get(promptImageTokens), w.get(completionImageTokens)
		hit, twoCached := w.get(promptCacheHitTokens), w.has(promptCachedTokens) && w.has(promptCacheHitTokens)
		if w.has(promptCacheHitTokens) && !w.has(promptCachedTokens) {
			u.CachedInputTokens = hit
		}
		if sum := hit + w.get(promptCacheMissTokens); sum > u.InputTokens {
			// DeepSeek's prompt_tokens is its cache hits and misses, billed
			// at the cached and the input price: a prompt_tokens below them
			// (a relay's rewrite) does not add up, and they are read as the
			// input, the dearer reading; such a usage is not trusted (see
			// readsAmiss).
			u.InputTokens = sum
		}
		// Relays serving Claude here count its cache writes in
		// prompt_tokens and say how many they were; when several say, the
		// largest (dearest) count. A split by kind (LiteLLM's
		// cache_creation_token_details, as Anthropic's cache_creation)
		// counts all the writes, also when no total comes with it.
		u.CacheWrite1hInputTokens = max(w.get(cacheCreation1hTokens), w.get(promptCacheCreation1hTokens))
		u.CacheWriteInputTokens = max(w.get(cacheCreationInputTokens), w.get(promptCacheWriteTokens),
			w.get(promptCacheCreationTokens), w.cacheCreationSplit(),
			w.get(promptCacheCreation5mTokens)+w.get(promptCacheCreation1hTokens))
		if r := w.get(cacheReadInputTokens); r > w.get(promptTokens) {
			// Reads prompt_tokens cannot hold (LiteLLM's count them in
			// it): it was counted as Anthropic counts input_tokens,
			// without the reads and the writes, so they are added, the
			// dearer reading; such a usage is not trusted (see readsAmiss).
			u.InputTokens += r + u.CacheWriteInputTokens
			u.CachedInputTokens, twoCached = r, false
		}
		// Perplexity bills citation and reasoning tokens besides prompt
		// and completion tokens (and outside total_tokens): citations at
		// about the input price, reasoning below the output price.
		u.InputTokens += w.get(citationTokens)
		u.OutputTokens += w.get(reasoningTokens)
		if twoCached && hit != u.CachedInputTokens {
			// Two counts of the cached part: u costs at least what
			// either reading does, whichever of input and cached input
			// the table prices higher.
			o := *u
			o.CachedInputTokens = hit
			u.coverBoth(&o)
		}
	case w.has(inputCachedTokens) || w.has(inputCacheWriteTokens): // OpenAI responses: input includes cached
		u.InputTokens, u.OutputTokens = w.get(inputTokens), w.get(outputTokens)
		u.CachedInputTokens = w.get(inputCachedTokens)
		// Responses APIs serving Claude (Azure AI Foundry) name its cache
		// writes, counted in input_tokens too.
		u.CacheWriteInputTokens = w.get(inputCacheWriteTokens)
		u.ImageInputTokens, u.ImageOutputTokens = w.get(inputImageTokens), w.get(outputImageTokens)
		if w.set&anthropicCacheCounts != 0 {
			// Anthropic's cache counts beside them (a relay serving
			// Claude whose usage type has both): read as Anthropic's too,
			// whose input_tokens leaves them out; u costs at least what
			// either reading costs.
			a, o := *w, Usage{}
			a.unset(inputCachedTokens)
			a.unset(inputCacheWriteTokens)
			if a.tokens(&o) {
				u.coverBoth(&o)
			}
		}
	case w.has(inputTokens) || w.has(outputTokens) || w.set&iterationCounts != 0: // Anthropic: input excludes cache reads and writes
		// Anthropic bills the sum over usage.iterations, which the
		// top-level counts may leave steps out of (a compaction's): each
		// count is the larger of the two.
		u.CachedInputTokens = max(w.get(cacheReadInputTokens), w.get(iterCacheReadTokens))
		u.CacheWrite1hInputTokens = w.get(cacheCreation1hTokens)
		// The writes of each kind are parts of the writes; a total below
		// their sum, or none (a relay that drops it), is read as their sum
		// (the dearer side).
		u.CacheWriteInputTokens = max(w.get(cacheCreationInputTokens), w.cacheCreationSplit())
		if more := w.get(iterCacheWriteTokens) - u.CacheWriteInputTokens; more > 0 {
			// Writes of steps the top-level counts leave out, which say
			// nothing of their kind: one-hour writes, the dearer.
			u.CacheWriteInputTokens += more
			u.CacheWrite1hInputTokens += more
		}
		u.InputTokens = max(w.get(inputTokens), w.get(iterInputTokens)) + u.CachedInputTokens + u.CacheWriteInputTokens
		u.OutputTokens = max(w.get(outputTokens), w.get(iterOutputTokens))
		// OpenAI's Images API answers in the Responses format without
		// cached_tokens, read here, and names its image tokens.
		u.ImageInputTokens, u.ImageOutputTokens = w.get(inputImageTokens), w.get(outputImageTokens)
	default:
		return false
	}
	return true
}

// anthropicCacheCounts are Anthropic's counts of cache reads and writes,
// which its input_tokens leaves out.
const anthropicCacheCounts = 1<<cacheReadInputTokens | 1<<cacheCreationInputTokens | 1<<cacheCreation5mTokens | 1<<cacheCreation1hTokens

var errMalformedUsage = errors.New("malformed usage")

// usageReadings gathers the usage values of one JSON object — a "usage"
// key may repeat — as two kinds of decoder read them: encoding/json
// (merged: a repeated object merges into the earlier one, null changes
// nothing) and the others (last: the last object or null replaces what came
// before). A "usage" key in another case ("Usage") is one encoding/json
// reads (it matches keys case-insensitively) and the others skip: its
// value goes into merged alone, as does that of a key of a count or of a
// details object in another case (see member). Most answers hold one usage object, which
// both kinds read alike: last is kept apart from merged only once they
// may differ (see apart). The zero value has read nothing.
type usageReadings struct {
	merged, last wireUsage // last is meaningful only when split
	bad          bool      // a value was malformed
	loose        bool      // a count was a number but not a plain integer (see looseCount), or the value outgrew maxUsageValue
	folded       bool      // the value being read is under a key in another case
	split        bool      // last is kept apart; until then it reads as merged
}

// apart keeps last apart from merged, as merged reads now, before a change
// to one of them alone.
func (r *usageReadings) apart() {
	if !r.split {
		r.last, r.split = r.merged, true
	}
}

// restart starts the others' reading of a new usage object under the usage
// key exactly: it replaces what they read before.
func (r *usageReadings) restart() {
	if r.split || r.merged.set != 0 {
		r.last, r.split = wireUsage{}, true
	}
}

// clearLast clears, in the others' reading, the counts below names (bit f
// for count f): a details object's that a new one replaces, or one a null
// unsets.
func (r *usageReadings) clearLast(below uint64) {
	if r.split || r.merged.set&below != 0 {
		r.apart()
		r.last.clear(below)
	}
}

// add reads one usage value (an object or null), valid JSON: a lexer has
// checked it (see decode).
func (r *usageReadings) add(v []byte) {
	if err := r.decode(v, 0); err != nil {
		r.bad = true
	}
}

// decode reads v, the object usageObjects[obj] (0: the usage object).
// Unknown keys are skipped; a count that is not a number, and a details
// value that is not an object, are malformed; a number that is not an
// integer is read loosely (see looseCount), and a known key in another case
// as encoding/json reads it (see member).
// v is valid JSON, which the lexer that captured it checked: its members
// are found by validMembers, not lexed a second time.
func (r *usageReadings) decode(v []byte, obj uint8) error {
	o := &usageObjects[obj]
	switch {
	case r.folded: // last is what the other decoders read, without this value
		r.apart()
	case obj == 0:
		r.restart()
	default:
		r.clearLast(o.below)
	}
	switch {
	case isJSONNull(v):
		return nil
	case len(v) == 0 || v[0] != '{':
		return errMalformedUsage
	}
	for key, value := range validMembers(v) {
		i, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, o.names)
		if m == noMatch {
			continue
		}
		if err := r.member(o, i, m, value); err != nil {
			return err
		}
	}
	return nil
}

// member reads value, that of the member of o whose key matched
// o.names[k] as m. A key in another case is one encoding/json reads (it
// matches keys case-insensitively, and by Unicode's simple folding) and
// other decoders skip: its value goes into merged alone, as a usage key's
// in another case does (see usageReadings).
func (r *usageReadings) member(o *usageObject, k int, m nameMatch, value []byte) error {
	if m == foldMatch && !r.folded {
		r.apart()
		r.folded = true
		err := r.member(o, k, exactMatch, value)
		r.folded = false
		return err
	}
	if o.fields[k] == usageFieldCount {
		return r.decode(value, o.objects[k])
	}
	return r.count(o.fields[k], value)
}

// readFolded is readValue for a member whose key matched o.names[k] in
// another case: read into merged alone (see member).
func (r *usageReadings) readFolded(p []byte, i int, o *usageObject, k int) (end int, err error) {
	if r.folded {
		return r.readValue(p, i, o, k)
	}
	r.apart()
	r.folded = true
	end, err = r.readValue(p, i, o, k)
	r.folded = false
	return end, err
}

// usageObject is an object of counts a usage value may hold: the usage
// object itself, usageObjects[0], or an object in it (by the keys that
// lead to it, usageFields' parent).
type usageObject struct {
	names   []string      // the keys it may hold
	fields  []usageField  // each key's count, or usageFieldCount for an object of counts
	objects []uint8       // for an object of counts, its index in usageObjects
	below   uint64        // the counts in it, and in the objects in it: bit f for count f
	written []writtenName // for writtenKey; written[0] stands before the first key
	slots   [64]uint8     // the indexes in written by writtenSlot; 0 is none
}

// writtenName is a key providers write in a usage object, for writtenKey.
type writtenName struct {
	writtenPiece // the name quoted, and a colon
	// next is the key providers write after it; nil for none.
	next *writtenName
	k    int8       // the name's index in the object's names; -1 for a name it does not read
	f    usageField // the count it reads: fields[k], usageFieldCount for an object or none
}

// usageKeyOrders are the orders in which providers write the keys of the
// objects of a usage value (by their path, as usageFields' parent), with
// keys no count reads: writtenKey knows them all, and tries the key that
// follows the last one first (in the first order that has one after it).
var usageKeyOrders = map[string][][]string{
	"": {
		{"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details"},                  // OpenAI
		{"prompt_tokens_details", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"},                                              // DeepSeek
		{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation", "output_tokens", "service_tier"}, // Anthropic
		{"input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"},                                            // OpenAI Responses
		{"total_tokens", "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"},                            // OpenAI Images
	},
	"prompt_tokens_details": {
		{"cached_tokens", "audio_tokens"},
		{"cached_tokens", "text_tokens", "audio_tokens", "image_tokens"}, // new-api
	},
	"completion_tokens_details": {
		{"reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"},
		{"reasoning_tokens", "image_tokens"}, // OpenRouter
	},
	"input_tokens_details":  {{"cached_tokens"}, {"text_tokens", "image_tokens"}},    // OpenAI Responses; Images
	"output_tokens_details": {{"reasoning_tokens"}, {"text_tokens", "image_tokens"}}, // OpenAI Responses; Images
	"cache_creation":        {{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}},
	"prompt_tokens_details/cache_creation_token_details": {{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}}, // LiteLLM
}

// indexWritten fills o.written and o.slots with o's names and those of
// orders, and links each to the one providers write after it.
func (o *usageObject) indexWritten(orders [][]string) {
	o.written = []writtenName{{}}
	for _, name := range slices.Concat(o.names, slices.Concat(orders...)) {
		if len(name) < 5 { // "cost": too short a member to compare a word at a time; key reads it
			continue
		}
		o.indexName(name)
	}
	for _, order := range orders { // o.written is whole: its elements stay put
		prev := &o.written[0]
		for _, name := range order {
			w := &o.written[o.indexName(name)]
			if prev.next == nil {
				prev.next = w
			}
			prev = w
		}
	}
}

// indexName returns the index in o.written of name, added if need be.
func (o *usageObject) indexName(name string) uint8 {
	member := `"` + name + `":`
	for j, w := range o.written {
		if w.s == member {
			return uint8(j)
		}
	}
	w := writtenName{writtenPiece: newWrittenPiece(member), k: int8(slices.Index(o.names, name)), f: usageFieldCount}
	if w.k >= 0 {
		w.f = o.fields[w.k]
	}
	o.written = append(o.written, w)
	h := writtenSlot(w.first)
	for ; o.slots[h] != 0; h = (h + 1) % uint64(len(o.slots)) {
	}
	o.slots[h] = uint8(len(o.written) - 1)
	return o.slots[h]
}

// usageObjects lists the usage object and the objects of counts in it,
// from usageFields.
var usageObjects = func() []usageObject {
	objs := []usageObject{{}}
	index := map[string]uint8{"": 0}
	parentOf := func(path string) (parent, key string) {
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			return path[:i], path[i+1:]
		}
		return "", path
	}
	var object func(path string) uint8
	object = func(path string) uint8 {
		if i, ok := index[path]; ok {
			return i
		}
		parent, key := parentOf(path)
		p, i := object(parent), uint8(len(objs))
		objs, index[path] = append(objs, usageObject{}), i
		objs[p].names, objs[p].fields, objs[p].objects = append(objs[p].names, key), append(objs[p].fields, usageFieldCount), append(objs[p].objects, i)
		return i
	}
	for f, uf := range usageFields {
		if uf.key == "" { // a sum of iterations
			continue
		}
		o := object(uf.parent)
		objs[o].names, objs[o].fields, objs[o].objects = append(objs[o].names, uf.key), append(objs[o].fields, usageField(f)), append(objs[o].objects, 0)
		for path := uf.parent; usageField(f) < wireCounts; path, _ = parentOf(path) {
			objs[index[path]].below |= 1 << f
			if path == "" {
				break
			}
		}
	}
	for path, o := range index {
		objs[o].indexWritten(usageKeyOrders[path])
	}
	return objs
}()

// usageObjectKeys is the usage object.
var usageObjectKeys = &usageObjects[0]

// usageValue reads a usage value as it passes, a chunk at a time, with a
// lexer of its own: a scanner hands it the value of a top-level "usage"
// member (jsonLexer.handOff), so that the value's bytes are lexed once, not
// with the answer and again to decode it. A details object is captured
// and, once the lexer has checked it, walked by decode: a lexer of its own
// would save little over the walk and outgrow the size class of the
// pooled answer scanner (see jsonUsageScanner and jsonScanner). It reads into a
// usageReadings as add does; a value longer than maxUsageValue is loose
// (not ok: see usageReadings.get), one with a member too long to capture
// malformed. (Its lexer counts nesting from the value: a usage value
// nested deep enough for the difference to matter is longer than that,
// and so not ok.) A value whole in its first chunk is read
// by usageReadings.readWhole, in one pass, without the lexer; one that
// readWhole declines is lexed from its first byte.
type usageValue struct {
	lex     jsonLexer
	capture valueCapture // the value of a count or details member that spans reads
	into    *usageReadings
	size    int32     // bytes read, up to maxUsageValue+1
	key     uint8     // the member being read: its index in usageObjectKeys
	keyAs   nameMatch // how its key matched
	first   byte      // the value's first byte
	lexed   bool      // lex has read, or the lexer of the scanner that holds v: see jsonUsageScanner.reset
}

// start makes v ready to read a value into r, the value of a usage key
// that matched m: exactly, or in another case (see usageReadings).
func (v *usageValue) start(r *usageReadings, m nameMatch) {
	v.into, v.size, v.first = r, 0, 0 // read resets the lexer, if it needs it
	v.capture.on = false
	if r.folded = m == foldMatch; r.folded {
		r.apart()
	} else {
		r.restart()
	}
}

// read follows p, the next bytes of the value, and returns where the value
// ends in p, or -1 when it goes on; ok is false when p is not JSON.
func (v *usageValue) read(p []byte) (end int, ok bool) {
	if v.size == 0 {
		if len(p) > 0 {
			v.first = p[0]
			if end := v.into.readWhole(p); end > 0 {
				v.size = int32(end) // readWhole takes no value over maxUsageValue
				return end, true
			}
		}
		v.lex, v.lexed = jsonLexer{}, true // the lexer reads the value from its first byte
	}
	end = readMembers(&v.lex, &v.capture, p, v)
	switch {
	case v.lex.state == lexError:
		v.into.bad = true
		return 0, false
	case end < 0:
		v.size = int32(min(int(v.size)+len(p), maxUsageValue+1))
		return -1, true
	}
	switch v.size = int32(min(int(v.size)+end, maxUsageValue+1)); {
	case v.first != '{' && v.first != 'n':
		v.into.bad = true // neither an object nor null
	case v.size > maxUsageValue:
		// Longer than any provider writes, yet read whole as it passed (a
		// member too long to capture spoils it): not trusted, but charged
		// when it costs more than the reservation, as SDKs read it.
		v.into.loose = true
	}
	return end, true
}

// readWhole reads the usage value at the start of p when it is an object
// whole in p, in one pass that checks it and decodes it together: its
// members are read as readMember reads them, in order. It returns where
// the object ends in p, or 0, leaving r as it was, when it is not whole in
// p, not JSON, longer than maxUsageValue, or nested deeper than
// skipContainer goes: the value's lexer then reads it from its first byte.
func (r *usageReadings) readWhole(p []byte) int {
	if len(p) < 2 || p[0] != '{' {
		return 0
	}
	if r.split || r.bad || r.merged.set != 0 { // a usage read before, kept to be put back
		was := *r
		if end := r.wholeObject(p); end > 0 {
			return end
		}
		*r = was
		return 0
	}
	if end := r.wholeObject(p); end > 0 { // most often: the first usage, nothing to copy
		return end
	}
	*r = usageReadings{folded: r.folded}
	return 0
}

// wholeObject is readWhole's read, which may leave r changed when it
// returns 0.
func (r *usageReadings) wholeObject(p []byte) int {
	if end, _ := r.readObject(p, 0, 0); end > 0 && end <= maxUsageValue {
		return end
	}
	return 0
}

// readObject reads the object usageObjects[obj] that opens at p[i] and
// returns where it ends in p, 0 when p does not hold it whole and valid.
// The usage object (obj 0) reads as usageValue's readKey and readMember
// do: a member that is malformed marks r bad, and the next is read. An
// object in it reads as decode does: its first malformed member is err,
// and the members after it are only checked.
func (r *usageReadings) readObject(p []byte, i int, obj uint8) (end int, err error) {
	o := &usageObjects[obj]
	if i = skipSpace(p, i+1); i < len(p) && p[i] == '}' {
		return i + 1, nil
	}
	prev := &o.written[0]
	for {
		if err == nil { // most often, every member: a count under the key providers write next
			var closed bool
			if i, prev, closed = r.plainMembers(p, i, prev); closed {
				return i, nil
			}
			i = skipSpace(p, i)
		}
		var k, colon int
		var m nameMatch
		w := prev.next // most often, the key providers write after prev: tried in line
		if w == nil || !w.at(p, i, 0) {
			w = o.writtenKey(p, i)
		}
		if w != nil {
			k, m, colon, prev = int(w.k), nameMatch(b2u(w.k >= 0)), i+len(w.s)-1, w
		} else if k, m, colon = o.key(p, i); colon == 0 {
			return 0, nil
		}
		if i = skipSpace(p, colon+1); i >= len(p) {
			return 0, nil
		}
		var e error
		switch {
		case m == noMatch || err != nil:
			i = skipValue(p, i)
		case m == foldMatch:
			i, e = r.readFolded(p, i, o, k)
		default:
			if f := o.fields[k]; f < usageGeo { // a count, most often written plain
				if n, end := plainCount(p, i); end > 0 {
					r.put(f, n)
					i = end
					break
				}
			}
			i, e = r.readValue(p, i, o, k)
		}
		if i <= 0 {
			return 0, nil
		}
		switch {
		case e == nil:
		case obj == 0:
			r.bad = true
		default:
			err = e
		}
		if i = skipSpace(p, i); i >= len(p) {
			return 0, nil
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			return i + 1, err
		default:
			return 0, nil
		}
	}
}

// plainMembers reads, for readObject, the members from p[i] that are
// written as providers write them most: the key providers write after
// prev's, a count written plain, and ',' or '}' straight after it. It
// reads them as readObject does, and returns where it stopped (at the next
// key, or the space before it; i when it read none), the last key read,
// and whether it read the object's '}', which i is then just past.
func (r *usageReadings) plainMembers(p []byte, i int, prev *writtenName) (int, *writtenName, bool) {
	for w := prev.next; w != nil && w.f < usageGeo && w.at(p, i, 0); w = w.next { // not an object of counts, nor where the answer ran
		n, end := plainCount(p, i+len(w.s))
		if end == 0 {
			break
		}
		r.put(w.f, n)
		if prev, i = w, end+1; p[end] == '}' {
			return i, prev, true
		}
	}
	return i, prev, false
}

// key reads the key at p[i] of a member of o, and returns the index in
// o.names of the name it matches, how, and where the colon after it is;
// colon is 0 when p does not hold them valid.
func (o *usageObject) key(p []byte, i int) (k int, m nameMatch, colon int) {
	if i >= len(p) || p[i] != '"' {
		return 0, 0, 0
	}
	end, escaped := quoteEnd(p, i+1)
	if end < 0 {
		return 0, 0, 0
	}
	k, m = lookupName(p[i+1:end], escaped, o.names)
	if colon = skipSpace(p, end+1); colon >= len(p) || p[colon] != ':' {
		return 0, 0, 0
	}
	return k, m, colon
}

// writtenKey returns the key of o.written at p[i] when it is written as
// providers write keys (the name quoted, then the colon), found by its
// first eight bytes; nil when it is not. (readObject tries the key
// providers write after the one before first.)
func (o *usageObject) writtenKey(p []byte, i int) *writtenName {
	if len(p)-i < 8 {
		return nil
	}
	first := binary.LittleEndian.Uint64(p[i:])
	for h := writtenSlot(first); o.slots[h] != 0; h = (h + 1) % uint64(len(o.slots)) {
		if w := &o.written[o.slots[h]]; w.first == first && w.at(p, i, 0) {
			return w
		}
	}
	return nil
}

// writtenSlot is where a name whose member starts with the eight bytes
// first is in usageObject.slots, or after it.
func writtenSlot(first uint64) uint64 { return first * 0x9e3779b97f4a7c15 >> 58 }

// readValue reads the value at p[i] of the member o.names[k] as count or
// decode reads it (but for a count written plain, which readObject reads),
// and returns where it ends in p, 0 or less when p does not hold it whole
// and valid.
func (r *usageReadings) readValue(p []byte, i int, o *usageObject, k int) (end int, err error) {
	f := o.fields[k]
	if f == usageFieldCount && p[i] == '{' { // a details object, read as decode reads it
		if !r.folded {
			r.clearLast(usageObjects[o.objects[k]].below)
		}
		return r.readObject(p, i, o.objects[k])
	}
	if end = skipValue(p, i); end <= 0 {
		return 0, nil
	}
	if f == usageFieldCount {
		return end, r.decode(p[i:end], o.objects[k])
	}
	return end, r.count(f, p[i:end])
}

// plainCount reads the count at p[i] when it is written plain: digits
// without a leading zero, fewer than 19 (so that parseUsageCount reads
// them), then ',' or '}'. end is 0 when it is not.
func plainCount(p []byte, i int) (n int64, end int) {
	j := i
	for ; j < len(p); j++ {
		d := p[j] - '0'
		if d > 9 {
			break
		}
		n = n*10 + int64(d)
	}
	if j == i || j-i > 18 || j == len(p) || p[i] == '0' && j > i+1 || p[j] != ',' && p[j] != '}' {
		return 0, 0
	}
	return n, j
}

// null reports whether the value read was null.
func (v *usageValue) null() bool { return v.first == 'n' }

// readKey starts capturing the value of a key of the usage object, in
// any case (see usageReadings.member); other keys are skipped.
func (v *usageValue) readKey() {
	raw, escaped := v.lex.key()
	if i, m := lookupName(raw, escaped, usageObjectKeys.names); m != noMatch {
		v.key, v.keyAs = uint8(i), m
		v.capture.start(maxUsageValue)
	}
}

func (v *usageValue) readMember(p []byte) {
	if !v.capture.on {
		return
	}
	value, whole := v.capture.end(p, &v.lex)
	if !whole || v.into.member(usageObjectKeys, int(v.key), v.keyAs, value) != nil {
		v.into.bad = true
	}
}

func (v *usageValue) readString()      {}
func (v *usageValue) readValue([]byte) {}

// count reads a count: an integer (or another number, see looseCount), or
// null (encoding/json keeps what it had; other decoders have none); for
// usageGeo, an inferenceGeo; for
// usageIterations, the sums of an array of iterations.
func (r *usageReadings) count(f usageField, v []byte) error {
	below := uint64(1) << f
	if f == usageIterations {
		below = iterationCounts
	}
	if isJSONNull(v) {
		if !r.folded {
			r.clearLast(below)
		}
		return nil
	}
	var n int64
	var err error
	switch f {
	case usageGeo:
		n = int64(readGeo(v))
	case usageCost:
		var ok bool
		if n, ok = readCost(v); !ok {
			return nil // not read: the counts are
		}
	case usageIterations:
		sums, loose, err := readIterations(v)
		if err != nil {
			return err
		}
		r.loose = r.loose || loose
		// A later array replaces an earlier one, in every decoder.
		r.merged.clear(below)
		if r.split && !r.folded {
			r.last.clear(below)
		}
		for i, n := range sums {
			r.put(iterInputTokens+usageField(i), n)
		}
		return nil
	default:
		if n, err = parseUsageCount(v); err != nil && len(v) > 0 && (v[0] == '-' || '0' <= v[0] && v[0] <= '9') {
			n, err = r.looseCount(v), nil
		}
	}
	if err != nil {
		return err
	}
	r.put(f, n)
	return nil
}

// looseCount reads v, a JSON number that is not a plain integer (a
// fraction, an exponent, 19 digits or more: 50000.0, as Python's
// json.dumps writes a float, or 5e4), rounded up; -1 when it is negative,
// a lie. Decoders that take any number read it (openai-python's models
// keep it, JavaScript reads a number), integer ones refuse it
// (encoding/json into an int): the usage is not ok (see get), and charged
// its dearer reading when that costs more than the reservation.
func (r *usageReadings) looseCount(v []byte) int64 {
	r.loose = true
	return looseNumber(v)
}

// looseNumber is looseCount's reading of v, a JSON number.
func looseNumber(v []byte) int64 {
	x, _ := strconv.ParseFloat(string(v), 64) // valid JSON: ±Inf when out of range
	switch {
	case x < 0:
		return -1
	case x > maxUsageTokens:
		return maxUsageTokens + 1
	}
	return int64(math.Ceil(x))
}

// readCost reads v, the value of a usage's cost (OpenRouter's: what it
// billed the answer, in dollars, its credits; the route it chose, an open
// model's provider, may bill more than the price table says), in
// micro-dollars, rounded up, at most maxUsageTokens+1 ($1,000 and more:
// a lie, see inRange). ok is false for anything but a number that is not
// negative (a string, a relay's own field of that name), which is not
// read.
func readCost(v []byte) (micros int64, ok bool) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	m, err := ParseMoney(string(v))
	if err != nil { // an exponent beyond ParseMoney's, or an amount beyond Money's range
		x, _ := strconv.ParseFloat(string(v), 64) // valid JSON: +Inf when out of range
		return int64(math.Ceil(min(x*1e6, maxUsageTokens+1))), true
	}
	return min((int64(m)+999)/1000, maxUsageTokens+1), true
}

// iterationKeys are the keys readIterations reads in an iteration, in the
// order of its sums.
var iterationKeys = [...]string{"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}

// foldsIterationKey reports whether key is a key readIterations reads,
// in another case: encoding/json would read it, others skip it.
func foldsIterationKey(key string) bool {
	folds := func(k string) bool { return key != k && strings.EqualFold(key, k) }
	return folds("type") || slices.ContainsFunc(iterationKeys[:], folds)
}

// readIterations reads v, the value of an Anthropic usage's iterations:
// the sampling steps one request ran, which Anthropic bills each (server
// compaction's summary, context_management's compact_20260112, is a step
// of its own that the top-level counts leave out). It returns the sums of
// their input, output, cache read and cache write tokens, each at most
// maxUsageTokens+1. A count that is a number but not a plain integer is
// read as a top-level one is (see looseCount): rounded up, and loose is
// true. An iteration of a type other than "message" or "compaction" (the
// advisor tool's "advisor_message" runs another model, at that model's
// prices), a count that is not a number or is negative, or a key in
// another case is malformed: the answer is then charged its reservation.
// It runs only for answers that hold iterations, so it decodes with
// encoding/json.
func readIterations(v []byte) (sums [4]int64, loose bool, err error) {
	var steps []map[string]json.RawMessage
	if err := json.Unmarshal(v, &steps); err != nil {
		return sums, false, errMalformedUsage
	}
	for _, step := range steps {
		if step == nil { // a null iteration
			return sums, false, errMalformedUsage
		}
		for key := range step {
			if foldsIterationKey(key) {
				return sums, false, errMalformedUsage
			}
		}
		var kind string
		if json.Unmarshal(step["type"], &kind) != nil || kind != "message" && kind != "compaction" {
			return sums, false, errMalformedUsage
		}
		for i, key := range iterationKeys {
			raw := step[key]
			if raw == nil || isJSONNull(raw) {
				continue
			}
			n, err := parseUsageCount(raw)
			if err != nil && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9') { // a number: valid JSON
				n, err, loose = looseNumber(raw), nil, true
			}
			if err != nil || n < 0 {
				return sums, false, errMalformedUsage
			}
			sums[i] = min(sums[i]+n, maxUsageTokens+1)
		}
	}
	return sums, loose, nil
}

// put reads n as count f: encoding/json's reading, and, under the usage
// key exactly, the others' (which, not yet apart, is merged).
func (r *usageReadings) put(f usageField, n int64) {
	r.merged.put(f, n)
	if r.split && !r.folded {
		r.last.put(f, n)
	}
}

// get returns the usage read (r's own, not a copy), and whether both
// kinds of decoder read it the same.
func (r *usageReadings) get() (*wireUsage, bool) {
	return &r.merged, !r.bad && !r.loose && (!r.split || r.merged.equal(&r.last))
}

// coverReadings makes u, read from r's dearest, cost at least what each
// of r's readings costs, at any prices (see coverBoth): dearest takes the
// smaller cached part, the dearer only while cached input is the cheaper.
func (r *usageReadings) coverReadings(u *Usage) {
	readings := [...]*wireUsage{&r.merged, &r.last}
	for i, w := range readings {
		if i > 0 && !r.split {
			break
		}
		v, x := *w, Usage{}
		v.foldTotal()
		if v.readUsage(&x) && x.InputTokens|x.OutputTokens != 0 {
			u.coverBoth(&x)
		}
	}
}

// dearest returns, for a usage that is well formed but that the two kinds
// of decoder read differently (a repeated "usage", a null after one), the
// two readings as one, each count the dearer: the larger, but for the
// cached part of an input (a discount) the smaller, none when a reading
// has none. The SDK may read either, and the provider billed what it
// counted: not ok, the answer is charged its reservation, or this when it
// costs more. ok is false for a malformed usage.
func (r *usageReadings) dearest() (w wireUsage, ok bool) {
	w = r.merged
	w.foldTotal() // each reading's output as it is read, before counts of the two are mixed
	last := w
	if r.split {
		last = r.last
		last.foldTotal()
	}
	for f := range wireCounts {
		v := last.get(f)
		switch {
		case f == promptCachedTokens || f == promptCacheHitTokens || f == inputCachedTokens:
			if !last.has(f) {
				w.unset(f)
			} else if v < w.get(f) {
				w.put(f, v)
			}
		case !last.has(f):
		case !w.has(f) || v > w.get(f):
			w.put(f, v)
		}
	}
	return w, !r.bad
}

// parseUsageCount reads a JSON integer; anything else (a fraction, an exponent,
// a string) is malformed. A hand parse: strconv.ParseInt(string(b)) would
// allocate, and this runs for every count of every usage object.
func parseUsageCount(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 || (b[0] == '0' && len(b) > 1) {
		return 0, errMalformedUsage // 19+ digits are above maxUsageTokens anyway
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errMalformedUsage
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// observeUsage wraps resp.Body so that report is called exactly once, when
// the caller reads the body to its end or closes it, with the usage found in
// the bytes the caller read (ok false when none was found, the stream was cut
// short, or the usage was malformed; u is then zero, or, for an answer cut
// short or a stream spoilt, the usage it reported before, which was billed
// at least, and for a usage decoders read differently, the dearer reading:
// see usageReadings.dearest). What the caller reads is unchanged and
// not buffered twice. JSON answers and SSE streams (OpenAI chunks, Anthropic
// events) are both understood, told apart by Content-Type (for a layer that
// knows the request asked to stream, see readsAsEventStream).
//
// Report is called from the goroutine that sees the end: a Read returning
// io.EOF or another error, or Close. An error or a Close before the end
// still reports ok when what was read is complete: a JSON value that has
// ended (as when the caller used json.Decoder), or a stream that sent
// [DONE] or message_stop. Close does not read on to look for usage.
//
// A JSON answer must be one valid JSON object; its top-level "usage" is
// decoded as its bytes pass (see usageValue). See sse.go for streams.
func observeUsage(resp *http.Response, report func(u Usage, ok bool)) {
	if resp.Body == nil {
		report(Usage{}, false)
		return
	}
	r := &usageReader{}
	r.observe(resp, reportFunc(report), false)
}

// usageReporter receives the usage a usageReader finds. An interface rather
// than a func lets a layer embed the usageReader in its per-request state
// and report to it without allocating a method value. u is the scanner's
// own, lent for the call: a reporter reads it, and neither changes nor
// keeps it (a Usage is 14 words, copied at each layer it passed through).
type usageReporter interface {
	reportUsage(u *Usage, ok bool)
}

// noUsage is what a reporter is lent for an answer without a body: never
// changed, as reporters do not change what they are lent, and shared, as a
// Usage lent through an interface would otherwise be allocated.
var noUsage Usage

// reportFunc adapts a func to usageReporter.
type reportFunc func(Usage, bool)

func (f reportFunc) reportUsage(u *Usage, ok bool) { f(*u, ok) }

// observe is observeUsage into r, which must be a zero usageReader; resp.Body
// must not be nil; stream says whether the request asked to stream (see
// readsAsEventStream). An SSE scanner is allocated only for streams.
func (r *usageReader) observe(resp *http.Response, report usageReporter, stream bool) {
	r.body, r.report = resp.Body, report
	if readsAsEventStream(contentType(resp.Header), stream) {
		r.ev = &streamScanner{}
	} else {
		r.js, r.sniff = jsonScanners.Get().(*jsonScanner), stream
	}
	resp.Body = r
}

// utf8BOM is the UTF-8 byte order mark.
const utf8BOM = "\xef\xbb\xbf"

// bomRead is usageReader.bom once the start of the answer is read: a
// whole byte order mark, or bytes that are none.
const bomRead = uint8(len(utf8BOM))

// skipBOM returns p, the next bytes of a JSON answer, without the part of
// a byte order mark that starts the answer: RFC 8259 lets a parser ignore
// one, and Python's json.loads and the Fetch API's json() do (a PHP relay
// whose source files carry one writes it before its output). The bytes of
// a part that turns out to be no mark are written to the scanner, which
// refuses them.
func (r *usageReader) skipBOM(p []byte) []byte {
	for ; r.bom < bomRead && len(p) > 0; p = p[1:] {
		if p[0] != utf8BOM[r.bom] {
			if r.bom > 0 {
				r.js.write([]byte(utf8BOM[:r.bom]))
			}
			r.bom = bomRead
			return p
		}
		r.bom++
	}
	return p
}

// sniffStream reads the first bytes of the answer to a streaming request
// labelled JSON, p, which SDKs that asked for a stream decode as events
// whatever its Content-Type (openai-go's ssestream, openai-python's
// Stream): a JSON value (the answer of a relay that does not stream) is
// read as JSON; anything else, as events. Whitespace before it says
// neither, and is read as both read it. r.mu is held.
func (r *usageReader) sniffStream(p []byte) {
	i := skipSpace(p, 0)
	if i == len(p) {
		return
	}
	r.sniff = false
	if strings.IndexByte(`{["-0123456789tfn`, p[i]) >= 0 {
		return
	}
	js := r.js
	r.js, r.ev = nil, &streamScanner{}
	js.reset()
	jsonScanners.Put(js)
}

// jsonScanners holds the scanners of JSON answers read to their end (or
// closed), zeroed, for the next answers: a scanner held in the attempt
// would be nearly half the Budget's state per attempt, which is kept as
// long as the request's context is, while a scanner is needed only until
// its answer ends.
var jsonScanners = sync.Pool{New: func() any { return new(jsonScanner) }}

// jsonScanner is a JSON answer's scanner and the usage it read, which the
// reporters are lent (see usageReporter) until the scanner goes back to
// jsonScanners.
type jsonScanner struct {
	jsonUsageScanner
	usage Usage
}

// streamScanner is an event stream's scanner and the usage it read, lent
// to the reporters as jsonScanner's is.
type streamScanner struct {
	sseScanner
	usage Usage
}

// readsAsEventStream reports whether an answer of Content-Type ct is read
// as an event stream: ct says so, or the request asked to stream and ct
// is not JSON (a relay that sends none, or text/plain). SDKs (openai-go,
// anthropic-sdk-go) decode a stream's events whatever its Content-Type:
// read as JSON, its usage was lost, and the usage-only chunk not hidden.
// The answer to a streaming request labelled JSON is read as its first
// byte says (see sniffStream).
func readsAsEventStream(ct string, stream bool) bool {
	// Inlined: most answers were not asked to stream and say
	// application/json, shorter than text/event-stream.
	return (stream || len(ct) >= len("text/event-stream")) && typedOrAskedStream(ct, stream)
}

// typedOrAskedStream is readsAsEventStream past its quick test.
func typedOrAskedStream(ct string, stream bool) bool {
	return isEventStream(ct) || stream && !strings.Contains(strings.ToLower(ct), "json")
}

// contentType is h.Get("Content-Type") without canonicalizing a key that is
// canonical already: observe runs for every answer.
func contentType(h http.Header) string {
	if v := h["Content-Type"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// isEventStream reports whether a Content-Type is text/event-stream,
// whatever its parameters and case.
func isEventStream(ct string) bool {
	if len(ct) < len("text/event-stream") { // application/json, most often
		return false
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// usageReader is the body observeUsage installs; with strip set (see
// newUsageChunkStripper) it also hides the usage-only chunk of a stream.
// Read and Close may run on different goroutines (net/http allows Close to
// abort a Read), so the scanners' state is guarded by mu; report runs
// outside it.
type usageReader struct {
	body   io.ReadCloser
	report usageReporter // nil: nobody to tell

	mu       sync.Mutex
	reported bool
	read     bool           // Read was called (kept outside mu: Read alone sets it)
	sniff    bool           // a streaming request's answer labelled JSON: its first byte says which it is (see sniffStream)
	bom      uint8          // bytes of a JSON answer's byte order mark read, up to bomRead (see skipBOM)
	js       *jsonScanner   // for JSON answers, until reported: see jsonScanners
	ev       *streamScanner // nil for JSON answers

	strip *stripState // not nil when hiding the usage-only chunk; only Read uses it
}

func (r *usageReader) Read(p []byte) (int, error) {
	if r.strip != nil {
		return r.readStripped(p)
	}
	n, err := r.body.Read(p)
	r.read = true
	r.scan(p[:n], err)
	return n, err
}

// scan follows p, just read from the body with err, and reports at the end.
func (r *usageReader) scan(p []byte, err error) {
	r.mu.Lock()
	if r.reported && (r.strip == nil || r.ev == nil) { // a JSON answer's scanner went back once reported
		r.mu.Unlock()
		return
	}
	q := p
	if r.bom < bomRead && r.ev == nil {
		q = r.skipBOM(p)
	}
	if r.sniff {
		r.sniffStream(q)
	}
	if r.ev != nil {
		r.ev.write(p) // whole: the stripper's positions are in p, and the SSE scanner reads a mark itself
	} else {
		r.js.write(q)
	}
	if err == nil || r.reported {
		r.mu.Unlock()
		return
	}
	r.reported = true
	// Another error ends the body as a Close would: what was read counts
	// when it is complete (a stream past its end event, a whole JSON
	// object), as a connection that broke after it took nothing from it.
	r.report1(err)
}

func (r *usageReader) Close() error {
	err := r.body.Close()
	if a, ok := r.report.(*budgetAttempt); ok && a.flags.Load()&attemptSettled != 0 {
		// The Budget's answer, settled: by report1 (nothing else settles
		// an attempt whose answer is read), which set reported first.
		// Most bodies are closed so, after their end: no lock to take.
		return err
	}
	r.mu.Lock()
	if r.reported {
		r.mu.Unlock()
		return err
	}
	r.reported = true
	r.report1(nil)
	return err
}

// report1 reads the usage, once, with r.mu held, which it unlocks, and
// tells r.report of it in the scanner's own Usage (not copied at each
// layer: see usageReporter). A JSON answer's scanner then goes back to
// jsonScanners. err is what ended the body (nil for Close): only a stream
// asks whether it is io.EOF, which compares two interfaces.
func (r *usageReader) report1(err error) {
	if ev := r.ev; ev != nil {
		var ok bool
		ev.usage, ok = ev.result(err == io.EOF)
		r.mu.Unlock()
		r.tell(&ev.usage, ok)
		return
	}
	js := r.js
	r.js = nil // reported: Read and Close no longer touch it
	ok := js.readResult(&js.usage)
	r.mu.Unlock()
	r.tell(&js.usage, ok)
	js.reset()
	js.usage = Usage{}
	jsonScanners.Put(js)
}

func (r *usageReader) tell(u *Usage, ok bool) {
	if r.report != nil {
		r.report.reportUsage(u, ok)
	}
}
