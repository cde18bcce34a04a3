package httpguard

import (
	"math/bits"
)

// This file holds the usage an answer reports: the provider formats, read
// through one table of fields below. usagedecode.go decodes a usage object
// into that table, usagemodel.go reads the model, geo and tier that ran
// the answer, and usagereader.go feeds an answer to its scanner
// (jsonusage.go for JSON, sse.go for event streams) as the caller reads it.
// Budget and Limiter both use it.
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
