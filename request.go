package httpguard

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
)

// This file reads a chat request body once, before it is sent: the model,
// the most output it may produce, how many candidates it asks for, whether
// it streams, and bounds on its prompt. Budget and Limiter both use it.
//
// A body is read exactly as the provider's JSON decoder would read it, or
// refused. Decoders agree on escapes ("\u006dodel" is model), and most on
// duplicate keys (the last wins), and parseChatRequest follows them; but
// gjson and simdjson keep the first, so a model or a count given twice is
// refused. They
// disagree on keys that differ only in case (encoding/json, which Go relays
// use, matches "MAX_TOKENS" to max_tokens; Python servers ignore it), on a
// null after a value (encoding/json keeps the value), on a repeated object
// (encoding/json merges, others replace) and on a count written as a string
// (Go refuses it, pydantic reads it). A body where such a disagreement
// touches a field read here is refused with errAmbiguousRequest, since no
// single reading is sure not to price it below what some server would run.

// errAmbiguousRequest reports a request body that servers would read
// differently; the message names the field.
var errAmbiguousRequest = errors.New("ambiguous request body")

// chatRequest is what a layer needs to know of a chat request body.
type chatRequest struct {
	Model        string
	Stream       bool
	IncludeUsage bool // stream_options.include_usage is true
	// Outputs are the kinds of output beyond text the request asks for,
	// each billed at prices of its own (see outputKinds).
	Outputs outputKinds
	// StoredInput is true when the request continues input the provider
	// stored, which it bills as input but the body does not hold (OpenAI
	// Responses' previous_response_id or conversation, a stored prompt
	// template: a prompt object, an input item_reference, or a reasoning
	// item by its id without its encrypted_content; a Gemini context cache,
	// cached_content, which LiteLLM passes on; an Anthropic message thread
	// it continues, thread): the body's bytes bound no prompt.
	StoredInput bool
	// Background is true when the request asks to run in the background
	// ("background": true, OpenAI Responses): it is answered queued,
	// without usage, and runs and bills on the provider's side.
	Background bool
	// Job is the field that makes the request a job the provider runs
	// and bills on its side by what the body does not hold, answering at
	// once without usage: an Assistants run (assistant_id: its thread's
	// stored messages, over as many model calls as its steps take) or a
	// fine-tuning job (training_file, training_files: the file's tokens
	// times its epochs), or a batch (input_file_id, requests: every
	// request of its file or array). reqModel, the zero value, when it is
	// none of these.
	// It is also the field by which a relay runs what the body does not
	// hold in place of its model (prompt_id, user_config): the request
	// cannot be priced either.
	Job requestField
	// GeoTier is true when Tier ends with the suffix of an inference_geo
	// other than "global" (Anthropic bills US-only inference, "us", at 1.1
	// times its prices).
	GeoTier bool
	// Tier is the billing tier the request asks for, when it is one
	// billed above standard prices: OpenAI's Priority processing, fast
	// mode, or a service_tier not known to be billed at standard prices or
	// less; then an inference_geo's suffix, when GeoTier is set.
	Tier tier
	// PromptTokens is a safe upper bound of the prompt's tokens, for the
	// budget; see parseChatRequest for why it holds and when it does not.
	PromptTokens int64
	// EstimatedPromptTokens is a central estimate of the prompt's tokens
	// (about 4 bytes of content per token, at least 1), for rate limiting.
	EstimatedPromptTokens int64
	// MaxOutput is the largest of max_tokens, max_completion_tokens and
	// max_output_tokens; when none is a positive number, 0, or, for a
	// request that states a thinking budget (Anthropic's "thinking":
	// {"budget_tokens": …}, or a reasoning_effort, which LiteLLM turns
	// into one for Claude), minus the max_tokens LiteLLM runs it with:
	// the budget plus liteLLMDefaultMaxTokens (kept here rather than in a
	// field of its own, as every attempt holds a chatRequest).
	MaxOutput int64
	// Choices is how many candidates the provider generates and bills,
	// each up to MaxOutput tokens: the larger of n, best_of (legacy
	// completions) and candidate_count (Gemini's, which LiteLLM passes
	// on), at least 1, times the prompts of a batch (legacy completions
	// take an array of prompts).
	Choices int64
	// Tools are the tools the request declares other than functions (nil
	// when none): those the provider runs may be billed per call.
	Tools *serverTools
}

// outputKinds are kinds of output a request asks for beyond text, one bit
// each (a byte: chatRequest has no other to spare).
type outputKinds uint8

const (
	// audioOutput: a modalities array holding "audio", or a non-null
	// audio object (OpenAI chat completions), or the speech endpoint;
	// billed at audio prices.
	audioOutput outputKinds = 1 << iota
	// imageOutput: a modalities array holding "image" (OpenRouter's chat
	// completions, for Gemini 2.5 Flash Image or gpt-5-image); billed at
	// image prices.
	imageOutput
	// outputsStated: the request lists its outputs (a modalities array
	// that is not empty).
	// A request that does not gets the model's default outputs, which for
	// a model that writes images (Gemini 2.5 Flash Image answers with
	// images and text) are images: reserved at image prices.
	outputsStated
	// imagesAlone: the Images API, which answers with images alone: output
	// its usage does not split is image output (see budgetAttempt.reportUsage).
	imagesAlone
)

// streamOptionsAt locates what withStreamUsage edits, in the body parsed:
// kept out of chatRequest, which every attempt carries, as only pricing
// reads it.
type streamOptionsAt struct {
	bodyLen     int
	objectStart int // the body's '{'
	// The value of the last stream_options member: [start, end) in the
	// body; end is 0 when there is none.
	start, end int
	isNull     bool // that value is null
	hasMembers bool // that value is an object with members
	members    bool // the body's object has members
	// The value of its last include_usage member: [incStart, incEnd) in
	// the body; incEnd is 0 when there is none.
	incStart, incEnd int
}

// setBody records body, the body parsed, and whether its object has
// members.
func (a *streamOptionsAt) setBody(body []byte, members bool) {
	a.bodyLen, a.objectStart, a.members = len(body), skipSpace(body, 0), members
}

// requestField is a top-level field of a chat request that this file reads.
type requestField uint8

const (
	reqModel requestField = iota
	reqStream
	reqStreamOptions
	reqMaxTokens
	reqMaxCompletionTokens
	reqMaxOutputTokens
	reqN
	reqBestOf
	reqMessages
	reqSystem
	reqPrompt
	reqInput
	reqTools
	reqAnthropicVersion
	reqStopSequences
	reqModalities
	reqAudio
	reqWebSearchOptions
	reqMaxToolCalls
	reqServiceTier
	reqSpeed
	reqInferenceGeo
	reqPreviousResponseID
	reqConversation
	reqModels
	reqFallbacks
	reqBackground
	reqAssistantID
	reqTrainingFile
	reqTrainingFiles
	reqPlugins
	reqMCPServers
	reqContextWindowFallbacks
	reqContentPolicyFallbacks
	reqExtraBody
	reqInstructions
	reqFunctions
	reqThinking
	reqReasoningEffort
	reqCandidateCount
	reqCachedContent
	reqPromptID
	reqUserConfig
	reqThread
	reqInputFileID
	reqRequests
	requestFieldCount
	reqOther = requestFieldCount
)

var requestFieldNames = [requestFieldCount]string{
	reqModel:               "model",
	reqStream:              "stream",
	reqStreamOptions:       "stream_options",
	reqMaxTokens:           "max_tokens",
	reqMaxCompletionTokens: "max_completion_tokens",
	reqMaxOutputTokens:     "max_output_tokens",
	reqN:                   "n",
	reqBestOf:              "best_of",
	reqMessages:            "messages",
	reqSystem:              "system",
	reqPrompt:              "prompt",
	reqInput:               "input",
	reqTools:               "tools",
	reqAnthropicVersion:    "anthropic_version",
	reqStopSequences:       "stop_sequences",
	reqModalities:          "modalities",
	reqAudio:               "audio",
	reqWebSearchOptions:    "web_search_options",
	reqMaxToolCalls:        "max_tool_calls",
	reqServiceTier:         "service_tier",
	reqSpeed:               "speed",
	reqInferenceGeo:        "inference_geo",
	reqPreviousResponseID:  "previous_response_id",
	reqConversation:        "conversation",
	reqModels:              "models",
	reqFallbacks:           "fallbacks",
	reqBackground:          "background",
	reqAssistantID:         "assistant_id",
	reqTrainingFile:        "training_file",
	reqTrainingFiles:       "training_files",
	reqPlugins:             "plugins",
	// Anthropic's MCP connector: servers whose tools the provider calls.
	reqMCPServers: "mcp_servers",
	// LiteLLM's: models it serves the request with when the model's
	// context window is too small, or its content policy refuses, billed
	// at their own prices; and extra_body, which it merges over the body.
	reqContextWindowFallbacks: "context_window_fallbacks",
	reqContentPolicyFallbacks: "content_policy_fallbacks",
	reqExtraBody:              "extra_body",
	// Prompt text outside messages and input: OpenAI Responses' system
	// prompt, and the function definitions of chat completions before
	// tools, both billed as input.
	reqInstructions: "instructions",
	reqFunctions:    "functions",
	// Anthropic's extended thinking, {"type": "enabled", "budget_tokens":
	// …}: LiteLLM runs a request that enables it without max_tokens with
	// max_tokens set to budget_tokens plus 4,096 (see thinkingBudget).
	reqThinking: "thinking",
	// OpenAI's reasoning effort, which LiteLLM turns into a thinking
	// budget for Claude (see effortThinkingBudget).
	reqReasoningEffort: "reasoning_effort",
	// Gemini's n, which LiteLLM passes into generationConfig as it is
	// (a parameter OpenAI's API does not have, to a provider that is not
	// OpenAI-compatible): that many candidates, each billed.
	reqCandidateCount: "candidate_count",
	// A Gemini context cache, which LiteLLM passes on as the request's
	// cachedContent: input stored on Gemini's side, billed as input.
	reqCachedContent: "cached_content",
	// What a relay runs in place of the body's model and fields: LiteLLM's
	// stored prompt (its prompt management: the prompt's model,
	// max_tokens and messages), and a router the body defines
	// (client-side credentials: its model_list maps the model named to
	// another, run with the relay's credentials).
	reqPromptID:   "prompt_id",
	reqUserConfig: "user_config",
	// Anthropic's message threads (see threadContinues).
	reqThread: "thread",
	// A batch: OpenAI's (/v1/batches: a file of requests, which LiteLLM's
	// managed batches route by a model in the body) and Anthropic's
	// (/v1/messages/batches: an array of requests, each with its params).
	reqInputFileID: "input_file_id",
	reqRequests:    "requests",
}

// Allowances added to the prompt bound for inputs whose tokens are not
// covered by their bytes (see parseChatRequest).
const (
	// Per string naming an image: above the largest per-image costs
	// Anthropic (about 1,600) and OpenAI's patch-based models (1,536
	// patches × 2.46 for its nano models, about 3,800) document.
	imageTokenAllowance = 4_000
	// Per "image_url", "input_image" or "file_id", the strings naming an
	// OpenAI image: its parts name one twice ("type": "image_url" and its
	// "image_url" key; "input_image" and "image_url", or "input_image" and
	// "file_id"), so that an image gets 48,200 tokens, above the largest
	// per-image cost OpenAI documents: gpt-4o-mini's, 2,833 tokens and
	// 5,667 a tile, up to 8 tiles at high detail (48,169), so that an
	// image costs it what it costs gpt-4o. Any other file referenced by id
	// (a PDF, which is billed as images too) gets one allowance.
	openAIImageTokenAllowance = 24_100
	toolsTokenAllowance       = 1_000 // hidden tool-use system prompt (Anthropic documents ~350)
)

// maxImageName is the longest string that can name an image input: keys
// and type names are short; longer strings are content.
const maxImageName = 64

// parseChatRequest reads a JSON chat request body (OpenAI chat completions,
// OpenAI completions and responses, or Anthropic messages). A body that is
// not a JSON object returns an error wrapping errJSONSyntax; a body that
// servers would read differently, one wrapping errAmbiguousRequest.
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
// tokens), audio, files referenced by id or URL, and hidden system prompts a
// provider adds for tools. For images and tools a fixed allowance is added
// (imageTokenAllowance per string naming an image — a key or type such as
// Anthropic's "image" — or openAIImageTokenAllowance when it is OpenAI's
// "image_url" or "input_image", or a "file_id", and toolsTokenAllowance
// when tools are present); audio, and files by reference beyond that
// allowance, stay exceptions, so a budget can be passed by their true
// cost, which is then charged in full.
func parseChatRequest(body []byte) (chatRequest, error) {
	var cr chatRequest
	if _, err := parseChat(body, &cr, nil, false); err != nil {
		return chatRequest{}, err
	}
	return cr, nil
}

// parseChatRequestFallbacks is parseChatRequest into cr (part-filled on
// an error), with where include_usage goes into at, and the models a
// relay may serve the request with when its model cannot, billed at their
// own prices: OpenRouter's "models" and, on its Anthropic-format endpoint,
// "fallbacks" ([{"model": …}]). They are kept out of chatRequest, which
// every attempt carries: only pricing needs them.
func parseChatRequestFallbacks(body []byte, cr *chatRequest, at *streamOptionsAt) ([]fallbackModel, error) {
	return parseChat(body, cr, at, true)
}

// parseChat is parseChatRequest into cr, with where include_usage goes
// into at unless at is nil, and parseChatRequestFallbacks' models when
// fallbacks is true. Most bodies hold only the members plainChat reads:
// they are read without a requestReader.
func parseChat(body []byte, cr *chatRequest, at *streamOptionsAt, fallbacks bool) ([]fallbackModel, error) {
	var p plainChat
	from := p.read(body)
	if from == 0 {
		if p.result(body, cr, at) {
			return nil, nil
		}
		from = -1
	}
	return parseRequest(body, cr, at, &p, from, fallbacks)
}

// parseRequest is parseChat with a requestReader, for a body whose
// members before body[from] (a key's quote) p read; from the body's start
// when from is -1.
func parseRequest(body []byte, cr *chatRequest, at *streamOptionsAt, p *plainChat, from int, fallbacks bool) ([]fallbackModel, error) {
	var r requestReader
	if err := r.read(body, p, from); err != nil {
		return nil, err
	}
	if err := r.result(body, cr, at); err != nil {
		return nil, err
	}
	if !fallbacks || r.given&fallbackBits == 0 { // most bodies: no call
		return nil, nil
	}
	return r.fallbackModels()
}

// fallbackModel is a model a request names to serve it if its model
// cannot (see fallbackModels).
type fallbackModel struct {
	name string
	// maxTokens is the max_tokens its entry sets, 0 when none:
	// Anthropic's fallback entries run with their own, in place of the
	// request's.
	maxTokens int64
	// fast is set by an entry's "speed" other than "standard" and null:
	// Anthropic's fallback entries may run in fast mode on their own,
	// billed at fast prices.
	fast bool
	// choices is the n its entry sets, 0 when none: LiteLLM runs an
	// entry given as an object with its fields over the request's.
	choices int64
}

// at returns cr as the fallback runs it: with its own max_tokens, when
// that is more than cr's bound (a relay that reads the request's alone
// stops sooner), and its own n, when that is more than cr's.
func (f fallbackModel) at(cr *chatRequest) *chatRequest {
	longer := f.maxTokens > 0 && f.maxTokens > cr.MaxOutput
	if !longer && f.choices <= cr.Choices {
		return cr
	}
	c := *cr
	switch {
	case !longer:
	case c.MaxOutput > 0:
		c.MaxOutput = f.maxTokens
	default: // none set: its own, or OutputReserve (or a thinking bound) when that is more
		c.MaxOutput = -max(-c.MaxOutput, f.maxTokens)
	}
	c.Choices = max(c.Choices, f.choices)
	return &c
}

// plainChat is what a request body says when its members are only those
// chat requests write first (commonKey's), each a value of the type it is
// read as (not null): most bodies. It is read without the requestReader,
// whose table of every field alone costs more to zero than reading such a
// body's fields. A field given again is read as the requestReader reads
// it: the last value wins, and the strings of each count their images.
type plainChat struct {
	model, stream, maxTokens, messages span   // the last value of each, in the body (not a slice: no write barrier)
	images                             int64  // as requestReader.images
	modelName                          string // the model's name when modelNames held it, "" when not
	maxTokensCount                     int64  // the count maxTokens holds
}

// span is where a value is in a body: body[start:end]; end is 0 when
// there is none.
type span struct{ start, end int }

// read reads body's members into p while each is one plainChat holds, of
// the type result reads, as readWhole and result read it: it returns 0
// when it read them all, or where the first member it does not read
// starts (its key's quote), or -1 for a body the requestReader reads from
// its start: not an object, an empty one, or one with a syntax error
// outside the values plainChat reads. A value of another type (null, or
// one scanStrings does not take), or a max_tokens plainCount does not read,
// is left to the requestReader too. The values are read here, not by a
// call per member: most bodies are short.
func (p *plainChat) read(body []byte) int {
	i, c := nextByte(body, 0)
	if c != '{' {
		return -1
	}
	i, c = nextByte(body, i+1)
	for {
		if c != '"' {
			return -1
		}
		field, keyEnd := commonKey(body, i+1)
		if keyEnd < 0 {
			return i // another key
		}
		var colon, start int // (c is the loop's, not one of its own: the next key's first byte)
		if colon, c = nextByte(body, keyEnd+1); c != ':' {
			return -1
		}
		start, c = nextByte(body, colon+1)
		end := -1
		switch field {
		case reqModel:
			if p.model.end != 0 {
				return -1 // given twice: the requestReader refuses it
			}
			if c == '"' {
				end = p.readModel(body, start)
			}
		case reqMessages:
			if c == '[' || c == '{' {
				var images int64
				if end, images = scanImages(body, start); end > 0 {
					p.images += images
					p.messages = span{start, end}
				}
			}
		case reqMaxTokens: // an integer written plain, read once
			if p.maxTokens.end != 0 {
				return -1 // given twice: the requestReader refuses it
			}
			if n, e := plainCount(body, start); e > 0 {
				p.maxTokens, p.maxTokensCount, end = span{start, e}, n, e
			}
		default: // reqStream
			for _, b := range [...]string{"true", "false"} {
				if e := start + len(b); e <= len(body) && string(body[start:e]) == b {
					p.stream, end = span{start, e}, e
					break
				}
			}
		}
		if end <= 0 {
			return i
		}
		switch i, c = nextByte(body, end); c {
		case ',':
			i, c = nextByte(body, i+1)
		case '}':
			if skipSpace(body, i+1) == len(body) {
				return 0
			}
			return -1
		default:
			return -1
		}
	}
}

// readModel reads the model string at body[start] into p: it returns
// where it ends, or -1 for one quoteEnd does not take. A name modelNames
// holds is read by comparing it with the body: a string that begins with
// it and its closing quote is it, plain.
func (p *plainChat) readModel(body []byte, start int) int {
	if start+1+minCachedModel <= len(body) {
		set := modelSet(body[start+1:])
		for w := range set {
			s := set[w].Load()
			if s == nil {
				continue
			}
			if end := start + 1 + len(*s); end < len(body) && body[end] == '"' && string(body[start+1:end]) == *s {
				if mayCountImage(body[start+1 : end]) {
					p.images += imageAllowance(body[start+1:end], false)
				}
				p.model, p.modelName = span{start, end + 1}, *s
				return end + 1
			}
		}
	}
	end, escaped := quoteEnd(body, start+1)
	if end < 0 {
		return -1
	}
	if raw := body[start+1 : end]; mayCountImage(raw) {
		p.images += imageAllowance(raw, escaped)
	}
	p.model, p.modelName = span{start, end + 1}, ""
	return end + 1
}

// result writes into cr (and at, unless nil) what p read of body, as
// requestReader.result would; false when it cannot (a model whose value
// does not decode, or that names OpenRouter's web plugin), cr
// part-written.
func (p *plainChat) result(body []byte, cr *chatRequest, at *streamOptionsAt) bool {
	*cr = chatRequest{Choices: 1, Stream: p.stream.end-p.stream.start == len("true"), PromptTokens: bodyPromptTokens(body, p.images),
		EstimatedPromptTokens: estimatedTokens(int64(p.messages.end - p.messages.start))}
	if cr.Model = p.modelName; p.model.end > 0 && cr.Model == "" {
		var ok bool
		if cr.Model, ok = modelName(body[p.model.start:p.model.end]); !ok {
			return false
		}
	}
	if strings.HasSuffix(cr.Model, ":online") {
		return false
	}
	cr.MaxOutput = min(p.maxTokensCount, maxUsageTokens) // as ceilNumber reads an integer
	if at != nil {
		at.setBody(body, true)
	}
	return true
}

// add adds to r the members p read.
func (p *plainChat) add(r *requestReader, body []byte) {
	for _, m := range [...]struct {
		field requestField
		value span
	}{{reqModel, p.model}, {reqStream, p.stream}, {reqMaxTokens, p.maxTokens}, {reqMessages, p.messages}} {
		if m.value.end > 0 {
			r.member(m.field, body, m.value.start, m.value.end)
		}
	}
	r.images = p.images
}

// A requestReader's bit sets have a bit for each field.
var _ [64 - requestFieldCount]struct{}

// requestReader gathers the fields of a request body in one pass.
type requestReader struct {
	values [requestFieldCount][]byte // the last value of each field
	// Bit f of given: field f was given a value; of nonNull: some value of
	// it was not null; of null: its last value is null.
	given, nonNull, null uint64

	images     int64 // the tokens the strings naming images are allowed
	members    bool
	streamOpts streamOptionsReading
	items      inputItems // of the last input
	tools      toolsReading
	at         streamOptionsAt
	// thread is set when a value of thread continues a thread (see
	// threadContinues): of repeated values, any (servers keep the first
	// or the last).
	thread bool
}

// toolsReading is what readTools reads of a request's tools value, kept
// from when the value is read (by scanTools, or in member) to result.
type toolsReading struct {
	list []serverTool
	err  error
	read bool
}

// fieldReading is what the occurrences of one field say.
type fieldReading struct {
	value   []byte // the last value
	nonNull bool   // some value was not null
}

func (f *fieldReading) add(v []byte) {
	f.value = v
	f.nonNull = f.nonNull || !isJSONNull(v)
}

// has reports whether field f was given a value.
func (r *requestReader) has(f requestField) bool { return r.given>>f&1 == 1 }

// ambiguous reports a null after a value: encoding/json keeps the value,
// other decoders take the null.
func (f *fieldReading) ambiguous() bool { return f.nonNull && isJSONNull(f.value) }

// read reads body's members into r: with readWhole, or, when it cannot,
// with the lexer. The members before body[at] (a key's quote) p read,
// unless at is -1.
func (r *requestReader) read(body []byte, p *plainChat, at int) error {
	var done bool
	var err error
	if at < 0 {
		done, err = r.readWhole(body)
	} else {
		p.add(r, body)
		done, err = r.readMembers(body, at)
	}
	if done {
		return err
	}
	*r = requestReader{}
	return r.readLexed(body)
}

// readWhole is readLexed without the lexer's events, for a body whose
// member values scanStrings takes (valid, not nested too deep): it reads
// the top-level object a member at a time, in the same order, and
// returns the same error, or none. done is false, r part-filled, when it
// meets what only the lexer reads (a deeper value, or a body that is not
// a JSON object, whose error the lexer words).
func (r *requestReader) readWhole(body []byte) (done bool, err error) {
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return false, nil
	}
	if i = skipSpace(body, i+1); i < len(body) && body[i] == '}' {
		return skipSpace(body, i+1) == len(body), nil
	}
	return r.readMembers(body, i)
}

// readMembers is readWhole from body[i], where a member starts.
func (r *requestReader) readMembers(body []byte, i int) (done bool, err error) {
	for {
		if i == len(body) || body[i] != '"' {
			return false, nil
		}
		field, keyEnd := commonKey(body, i+1)
		if keyEnd < 0 {
			if field, keyEnd, err = r.readKey(body, i+1); err != nil {
				return true, err // as readLexed: at the key, before its colon
			} else if keyEnd < 0 {
				return false, nil
			}
		}
		if field == reqInput {
			r.items = inputItems{}
		}
		if i = skipSpace(body, keyEnd+1); i == len(body) || body[i] != ':' {
			return false, nil
		}
		start := skipSpace(body, i+1)
		if start == len(body) {
			return false, nil
		}
		end := r.scanStrings(body, start, field)
		if end < 0 {
			return false, nil
		}
		if err := r.member(field, body, start, end); err != nil {
			return true, err
		}
		if i = skipSpace(body, end); i == len(body) {
			return false, nil
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return skipSpace(body, i+1) == len(body), nil
		default:
			return false, nil
		}
	}
}

// readKey is readWhole's reading of a top-level key whose content starts
// at body[i], for the keys commonKey does not read: it returns the field
// the key names and its closing quote (-1 when body does not hold it
// whole and valid), or the error of a key in another case.
func (r *requestReader) readKey(body []byte, i int) (requestField, int, error) {
	end, escaped := quoteEnd(body, i)
	if end < 0 {
		return reqOther, -1, nil
	}
	raw := body[i:end]
	if mayCountImage(raw) { // inlined: most strings are told apart without a call
		r.images += imageAllowance(raw, escaped)
	}
	// As lookupRequestField reads the key, without its call.
	if f, m := requestKey(raw, escaped); m == exactMatch {
		return requestField(f), end, nil
	} else if m == foldMatch {
		return reqOther, end, foldedFieldError(raw, f)
	}
	return reqOther, end, nil
}

// commonKey reads the top-level key whose content starts at body[i] when
// it is one of those chat requests write first (model, messages,
// max_tokens, stream), written plainly, by comparing its first eight bytes
// and the few after them: it returns the field and the key's closing
// quote, as quoteEnd and requestKey would, or -1 for any other key. None
// of them names an image.
func commonKey(body []byte, i int) (requestField, int) {
	if i+11 > len(body) { // the longest, max_tokens", and i+8 for the word
		return reqOther, -1
	}
	w := binary.LittleEndian.Uint64(body[i : i+8 : i+8])
	switch {
	case w&(1<<48-1) == wordModel:
		return reqModel, i + len("model")
	case w == wordMessages && body[i+8] == '"':
		return reqMessages, i + len("messages")
	case w == wordMaxTokens && string(body[i+8:i+11]) == `ns"`:
		return reqMaxTokens, i + len("max_tokens")
	case w&(1<<56-1) == wordStream:
		return reqStream, i + len("stream")
	}
	return reqOther, -1
}

// The first eight bytes of the keys commonKey reads, as it loads them
// (little-endian), the bytes after a short key's quote left out.
var (
	wordModel     = binary.LittleEndian.Uint64([]byte("model\"\x00\x00"))
	wordMessages  = binary.LittleEndian.Uint64([]byte("messages"))
	wordMaxTokens = binary.LittleEndian.Uint64([]byte("max_toke"))
	wordStream    = binary.LittleEndian.Uint64([]byte("stream\"\x00"))
)

// readLexed reads body's members into r with the lexer, which reads any
// body, and words the error of one that is not a JSON object.
func (r *requestReader) readLexed(body []byte) error {
	l := jsonLexer{objectOnly: true, wantStrings: true}
	l.feed(body)
	field := reqOther
	for {
		switch l.next() {
		case evKey:
			raw, escaped := body[l.keyStart+1:l.pos-1], l.keyEscaped
			r.countImage(raw, escaped)
			var err error
			if field, err = lookupRequestField(raw, escaped); err != nil {
				return err
			}
			if field == reqInput {
				r.items = inputItems{}
			}
			l.handOff = true
		case evValue:
			if err := r.scanMember(&l, body, field); err != nil {
				return err
			}
		case evMember:
			if err := r.member(field, body, l.valStart, l.pos); err != nil {
				return err
			}
		case evString: // in a value scanStrings did not take: deeper than it goes, or not JSON
			if l.strStart >= 0 {
				r.countImage(body[l.strStart+1:l.pos-1], l.strEscaped)
			}
			if start, _ := l.memberStart(); field == reqInput && l.depth == itemDepth && body[start] == '[' {
				r.items.read(body, l.strStart, l.pos, l.strEscaped)
			}
		case evMore:
			if !l.end() {
				return fmt.Errorf("request body is not a JSON object: %w", errJSONSyntax)
			}
			return nil
		case evError:
			return fmt.Errorf("request body is not a JSON object: %w", errJSONSyntax)
		}
	}
}

// scanMember reads the value of a top-level member that l handed off, in
// one pass that finds the strings that may name images (and the input's
// items), as the lexer's evString would; a value scanStrings does not take
// (nested deeper than it goes, or not JSON) goes back to l, undone.
func (r *requestReader) scanMember(l *jsonLexer, body []byte, field requestField) error {
	start := l.pos
	images, read := r.images, r.items
	end := r.scanStrings(body, start, field)
	if end < 0 {
		r.images, r.items = images, read
		l.decline()
		return nil
	}
	l.muteMember = true // read here
	l.resume(end)
	return r.member(field, body, start, end)
}

// scanStrings reads the strings of the value of field that starts at
// body[start], and returns where it ends: -1, with r part changed, when
// it does not take it (a value not JSON, or nested more than 64 deep in
// a value scanImages reads).
func (r *requestReader) scanStrings(body []byte, start int, field requestField) int {
	switch c := body[start]; { // most values are strings or integers, read without a scanner's call
	case c == '"':
		end, escaped := quoteEnd(body, start+1)
		if end < 0 {
			return -1
		}
		if raw := body[start+1 : end]; mayCountImage(raw) {
			r.images += imageAllowance(raw, escaped)
		}
		return end + 1
	case c == '-' || '0' <= c && c <= '9':
		if end := wholeInt(body, start); end > 0 {
			return end
		}
	}
	switch {
	case body[start] != '[': // keys matter only in an input's items and in tools
	case field == reqInput:
		return r.scanInput(body, start)
	case field == reqTools && r.values[reqTools] == nil: // (a second one is refused as it is)
		return r.scanTools(body, start)
	}
	end, images := scanImages(body, start)
	r.images += images
	return end
}

// scanInput is scanStrings for an input array at p[i] ('['), in one
// pass: it reads the keys of the items in it with r.items, as the lexer's
// evString would, and the strings that are their values, and leaves the
// other values of items (content nested in them) and the elements that
// are not items to scanImages, which counts their depth from where it
// starts. It returns where the array ends, or -1, with r part changed,
// when p does not hold it whole and valid.
func (r *requestReader) scanInput(p []byte, i int) int { return r.scanArray(p, i, nil) }

// scanTools is scanInput for a tools array, whose elements it reads as
// readTools reads them, into r.tools, in the same pass as their strings.
// r.tools is left as it was when it returns -1.
func (r *requestReader) scanTools(p []byte, i int) int {
	var tools toolsReading
	end := r.scanArray(p, i, &tools)
	if end >= 0 {
		tools.read = true
		r.tools = tools
	}
	return end
}

// scanArray is scanInput, or scanTools when tools is not nil.
func (r *requestReader) scanArray(p []byte, i int, tools *toolsReading) int {
	i, c := nextByte(p, i+1)
	if c == ']' {
		return i + 1
	}
	for {
		switch {
		case c != '{': // an element that is neither an item nor a tool (a function's, to a server)
			end, images := scanImages(p, i)
			if end < 0 {
				return -1
			}
			i, r.images = end, r.images+images
		default:
			if i, c = nextByte(p, i+1); c == '}' {
				i++ // no item; a function's tool
				break
			}
			if tools == nil {
				r.items.next() // an item begins at its first key
				if i = r.scanItem(p, i, nil); i < 0 {
					return -1
				}
				break
			}
			var tr toolReader
			if i = r.scanItem(p, i, &tr); i < 0 {
				return -1
			}
			if tools.err == nil { // readTools ends at the first refusal
				if t, err := tr.result(); err != nil {
					tools.list, tools.err = nil, err
				} else if !functionTool(t.Type) {
					tools.list = append(tools.list, t)
				}
			}
		}
		switch i, c = nextByte(p, i); c {
		case ']':
			return i + 1
		case ',':
			i, c = nextByte(p, i+1)
		default:
			return -1
		}
	}
}

// scanItem is scanInput's reading of the members of an item, from its
// first key at p[i] to its closing brace, and scanTools' of a tool, whose
// members go to tr rather than to r.items: it returns where the object
// ends (after its '}'), or -1.
func (r *requestReader) scanItem(p []byte, i int, tr *toolReader) int {
	for {
		if i >= len(p) || p[i] != '"' {
			return -1
		}
		end, escaped := shortQuoteEnd(p, i+1), false // most keys are short
		if end < 0 {
			if end, escaped = quoteEnd(p, i+1); end < 0 {
				return -1
			}
		}
		key := p[i+1 : end]
		if escaped && mayCountImage(key) || !escaped && mayCountPlainImage(key) {
			r.images += imageAllowance(key, escaped)
		}
		var c byte
		if i, c = nextByte(p, end+1); c != ':' {
			return -1
		}
		v := skipSpace(p, i+1)
		if v == len(p) {
			return -1
		}
		if p[v] == '"' { // most values: read here, without scanImages' call
			end, valueEscaped := quoteEnd(p, v+1)
			if end < 0 {
				return -1
			}
			if raw := p[v+1 : end]; valueEscaped && mayCountImage(raw) || !valueEscaped && mayCountPlainImage(raw) {
				r.images += imageAllowance(raw, valueEscaped)
			}
			if i = end + 1; tr != nil {
				tr.member(key, escaped, p[v:i])
			} else {
				r.items.member(key, escaped, p[v:i], valueEscaped)
			}
		} else {
			var images int64
			if i, images = scanImages(p, v); i < 0 {
				return -1
			}
			if r.images += images; tr != nil {
				tr.member(key, escaped, p[v:i])
			} else {
				r.items.member(key, escaped, p[v:i], false)
			}
		}
		switch i, c = nextByte(p, i); c {
		case '}':
			return i + 1
		case ',':
			i = skipSpace(p, i+1)
		default:
			return -1
		}
	}
}

// scanImages is scanValue(p, i, s) (the tests' plain reader) for an s
// that adds up the allowances of the strings naming images, in fewer
// instructions: it returns the
// value's end, or -1, and that sum. An array of text messages is read by
// scanTextMessages; skipper.run reads on where it stops, and reads the
// tokens requests hold most (strings that end in their first 32 bytes and
// cannot name an image, integers) and returns here for the others.
func scanImages(p []byte, i int) (end int, images int64) {
	s := skipper{images: true}
	if i < len(p) && p[i] == '[' {
		var depth int
		if i, images, depth = scanTextMessages(p, i); depth == 0 {
			return i, images
		}
		s.depth, s.objects = depth, b2u(depth == 2) // in the array, or in an object in it
	}
	for {
		var at skipStep
		switch i, at = s.run(p, i); at {
		case skipString:
			end, escaped := quoteEnd(p, i)
			if end < 0 {
				return -1, 0
			}
			if raw := p[i:end]; mayCountImage(raw) {
				images += imageAllowance(raw, escaped)
			}
			i = end + 1
		case skipNumber:
			if i = numberEnd(p, i); i < 0 {
				return -1, 0
			}
		default: // skipEnded
			if i < 0 {
				return -1, 0
			}
			return i, images
		}
		s.resume = at
	}
}

// scanTextMessages is scanImages for the array at p[i] ('[') while its
// elements are objects whose values are strings, as the messages of a text
// chat are, in fewer instructions than skipper.run's states: it returns
// the array's end, or -1, and the allowances of its strings, at depth 0;
// or where a value it leaves to run starts, the allowances of the strings
// before it, and how deep the value is: 1, an element that is not an
// object; 2, a member's value that is not a string.
func scanTextMessages(p []byte, i int) (end int, images int64, depth int) {
	i, c := nextByte(p, i+1)
	if c == ']' {
		return i + 1, 0, 0
	}
	for {
		if c != '{' {
			return i, images, 1
		}
		if end, n := compactMessage(p, i); end > 0 {
			i, images = end-1, images+n // at its '}'
		} else if i, c = nextByte(p, i+1); c != '}' {
			for key := true; ; key = !key { // the object's strings, keys and values in turn, from p[i]
				if c != '"' {
					return -1, 0, 0
				}
				end := -1
				if key {
					end = messageKey(p, i+1)
				}
				if end < 0 {
					var n int64
					if end, n = textString(p, i+1); end < 0 {
						return -1, 0, 0
					}
					images += n
				}
				if i, c = nextByte(p, end+1); key {
					if c != ':' {
						return -1, 0, 0
					}
					if i, c = nextByte(p, i+1); c != '"' {
						return i, images, 2
					}
					continue
				}
				if c == '}' {
					break
				}
				if c != ',' {
					return -1, 0, 0
				}
				i, c = nextByte(p, i+1)
			}
		}
		switch i, c = nextByte(p, i+1); c { // after the object's '}'
		case ']':
			return i + 1, images, 0
		case ',':
			i, c = nextByte(p, i+1)
		default:
			return -1, 0, 0
		}
	}
}

// compactMessage reads the message at p[i] ('{') when it is written as
// SDKs write a text message, compactly, role first:
// {"role":"…","content":"…"}. It returns where it ends (after its '}')
// and the allowances of its two strings, as scanTextMessages' loop reads
// them, by comparing the bytes between the strings (and a "user" role)
// with that form; or -1 for any other object, which the loop then reads.
func compactMessage(p []byte, i int) (end int, images int64) {
	if i+len(`{"role":"`) > len(p) || binary.LittleEndian.Uint64(p[i:i+8:i+8]) != wordRoleOpen || p[i+8] != '"' {
		return -1, 0
	}
	start := i + len(`{"role":"`)
	role, n := start+len("user"), int64(0) // the commonest role, compared with what follows it
	if start+8 > len(p) || binary.LittleEndian.Uint64(p[start:start+8:start+8]) != wordUserRole {
		role, n = textString(p, start)
	}
	if role < 0 || role+len(`","content":"`) > len(p) ||
		binary.LittleEndian.Uint64(p[role:role+8:role+8]) != wordContentOpen ||
		binary.LittleEndian.Uint64(p[role+5:role+13:role+13]) != wordContentColon {
		return -1, 0
	}
	content, m := textString(p, role+len(`","content":"`))
	if content < 0 || content+1 >= len(p) || p[content+1] != '}' {
		return -1, 0
	}
	return content + 2, n + m
}

// textString reads the string of a message whose content starts at p[i]:
// it returns its closing quote, or -1 when it has none, and its allowance
// (see imageAllowance).
func textString(p []byte, i int) (end int, images int64) {
	escaped := false
	if end = shortQuoteEnd(p, i); end < 0 { // most roles end in their first eight bytes
		if end, escaped = quoteEnd(p, i); end < 0 {
			return -1, 0
		}
	}
	if raw := p[i:end]; mayCountImage(raw) {
		images = imageAllowance(raw, escaped)
	}
	return end, images
}

// messageKey reads the key whose content starts at p[i] when it is one
// that every message writes (role, content), written plainly: it returns
// its closing quote, as shortQuoteEnd would, or -1 for any other key.
// Neither names an image.
func messageKey(p []byte, i int) int {
	if i+8 > len(p) {
		return -1
	}
	switch w := binary.LittleEndian.Uint64(p[i : i+8 : i+8]); {
	case w&(1<<40-1) == wordRole:
		return i + len("role")
	case w == wordContent:
		return i + len("content")
	}
	return -1
}

// The first bytes of the keys messageKey reads, as it loads them.
var (
	wordRole    = binary.LittleEndian.Uint64([]byte("role\"\x00\x00\x00"))
	wordContent = binary.LittleEndian.Uint64([]byte("content\""))
)

// The bytes of compactMessage's form, as it loads them: its first eight,
// and those between its strings, `","content":"`, in two overlapping words.
var (
	wordRoleOpen     = binary.LittleEndian.Uint64([]byte(`{"role":`))
	wordContentOpen  = binary.LittleEndian.Uint64([]byte(`","conte`))
	wordContentColon = binary.LittleEndian.Uint64([]byte(`ntent":"`))
	wordUserRole     = binary.LittleEndian.Uint64([]byte(`user","c`)) // a user's role, which names no image, and what follows
)

// member reads the value of a top-level member, body[start:end], whose
// key names field.
func (r *requestReader) member(field requestField, body []byte, start, end int) error {
	r.members = true
	switch field {
	case reqOther:
		return nil
	case reqInput:
		r.items.next() // the last item ends with the input
	case reqThread:
		r.thread = r.thread || threadContinues(body[start:end])
	case reqTools:
		if r.values[reqTools] != nil {
			return errRepeatedTools
		}
		if !r.tools.read { // not read with the value's strings (scanTools)
			list, err := readTools(body[start:end])
			r.tools = toolsReading{list, err, true}
		}
	}
	bit := uint64(1) << field
	if r.given&bit&onceBits != 0 {
		// encoding/json and Python keep the last, gjson (in many Go
		// relays) and simdjson the first: priced by one, run by the other.
		return fmt.Errorf("request field %q given twice, which servers read differently (some keep the first, some the last): give it once: %w", requestFieldNames[field], errAmbiguousRequest)
	}
	v := body[start:end]
	r.values[field] = v
	r.given |= bit
	if isJSONNull(v) {
		r.null |= bit
	} else {
		r.nonNull, r.null = r.nonNull|bit, r.null&^bit
	}
	if field == reqStreamOptions {
		return r.addStreamOptions(start, v)
	}
	return nil
}

// lookupRequestField returns the field a top-level key names, or reqOther.
// A key that names a field in another case is ambiguous.
func lookupRequestField(raw []byte, escaped bool) (requestField, error) {
	f, m := requestKey(raw, escaped)
	switch m {
	case exactMatch:
		return requestField(f), nil
	case foldMatch:
		return reqOther, foldedFieldError(raw, f)
	}
	return reqOther, nil
}

// foldedFieldError refuses a top-level key, raw, that names field f in
// another case.
func foldedFieldError(raw []byte, f int) error {
	return fmt.Errorf("request field %q: a spelling of %q that some servers read and others ignore: %w",
		appendUnquoted(nil, raw), requestFieldNames[f], errAmbiguousRequest)
}

// requestKey is lookupName(raw, escaped, requestFieldNames[:]), quicker
// for the top-level keys chat requests write most.
func requestKey(raw []byte, escaped bool) (int, nameMatch) {
	if !escaped {
		switch string(raw) {
		case "model":
			return int(reqModel), exactMatch
		case "messages":
			return int(reqMessages), exactMatch
		case "max_tokens":
			return int(reqMaxTokens), exactMatch
		case "stream":
			return int(reqStream), exactMatch
		case "max_completion_tokens":
			return int(reqMaxCompletionTokens), exactMatch
		case "temperature", "top_p", "user", "stop", "tool_choice", "response_format", "seed", "metadata",
			"presence_penalty", "frequency_penalty", "parallel_tool_calls":
			return -1, noMatch
		}
	}
	return lookupName(raw, escaped, requestFieldNames[:])
}

// errRepeatedTools refuses a repeated tools field: encoding/json decodes
// a repeated array into the elements the first one filled (a later tool
// without a type keeps an earlier one's); other decoders keep the last
// array alone.
var errRepeatedTools = fmt.Errorf("request field \"tools\" repeated, which decoders that merge its elements and decoders that keep the last read differently: %w", errAmbiguousRequest)

// addStreamOptions records a value of stream_options, v, which starts at
// body[start].
func (r *requestReader) addStreamOptions(start int, v []byte) error {
	r.at.start, r.at.end, r.at.isNull = start, start+len(v), isJSONNull(v)
	r.at.incStart, r.at.incEnd = 0, 0
	if r.at.isNull {
		return nil
	}
	members, inc, err := r.streamOpts.add(v)
	if inc != nil {
		r.at.incStart = start + cap(v) - cap(inc) // inc is a slice of v
		r.at.incEnd = r.at.incStart + len(inc)
	}
	r.at.hasMembers = members
	return err
}

// countImage counts raw string content if it names an image input;
// escaped says raw holds a backslash escape (the lexer saw it).
func (r *requestReader) countImage(raw []byte, escaped bool) {
	if mayCountImage(raw) {
		r.images += imageAllowance(raw, escaped)
	}
}

// imageAllowance returns the tokens allowed for an image that raw string
// content names, 0 when it names none; raw is at most maxImageName bytes.
func imageAllowance(raw []byte, escaped bool) int64 {
	s := raw
	if escaped {
		var buf [3 * maxImageName]byte
		s = appendUnquoted(buf[:0], raw)
	}
	switch {
	case len(s) == len("image_url") && asciiEqualFold(s, "image_url") || len(s) == len("input_image") && asciiEqualFold(s, "input_image") ||
		len(s) == len("file_id") && asciiEqualFold(s, "file_id"):
		return openAIImageTokenAllowance
	case len(s) == len("image_generation_call") && asciiEqualFold(s, "image_generation_call"):
		// An image generated before, sent back by id: named once, it gets
		// both allowances an image part's two names do.
		return 2 * openAIImageTokenAllowance
	case hasASCIIPrefixFold(s, "image") || hasASCIISuffixFold(s, "_image"):
		return imageTokenAllowance
	}
	return 0
}

// mayCountImage reports whether raw string content may name an image:
// most strings are told apart here, where it is inlined, without a call.
func mayCountImage(raw []byte) bool {
	return len(raw) >= len("image") && len(raw) <= maxImageName && mayNameImage(raw)
}

// mayCountPlainImage is mayCountImage for raw content without escapes, in
// which a name of an image (see imageAllowance) begins with an i
// (image…, image_url, input_image) or is file_id, or ends with _image,
// in either case: most strings are told apart here, where it is inlined.
func mayCountPlainImage(raw []byte) bool {
	n := len(raw)
	return n >= len("image") && n <= maxImageName && (raw[0]|0x20 == 'i' || raw[0]|0x20 == 'f' && n == len("file_id") ||
		raw[n-1]|0x20 == 'e' && n >= len("_image") && raw[n-len("_image")] == '_')
}

// mayNameImage reports whether raw string content may name an image,
// before its escapes are decoded: the name begins with an i or an f, or
// ends with an e or a d, in either case, written as it is or escaped
// (\u0069, \u0065, \u0064: an escape that begins it, a 5 or a 4 that
// ends it).
func mayNameImage(raw []byte) bool {
	return imageEdges[raw[0]]&imageFirst|imageEdges[raw[len(raw)-1]]&imageLast != 0
}

// imageEdges flags the bytes that may begin (imageFirst) and end
// (imageLast) a string naming an image, for mayNameImage.
var imageEdges = func() (t [256]uint8) {
	for _, c := range "iIfF\\" {
		t[c] |= imageFirst
	}
	for _, c := range "eE5dD4" {
		t[c] |= imageLast
	}
	return t
}()

const (
	imageFirst = 1 << iota
	imageLast
)

// result writes into cr (and at, unless nil) what r read of body.
func (r *requestReader) result(body []byte, cr *chatRequest, at *streamOptionsAt) error {
	if ambiguous := r.nonNull & r.null; ambiguous != 0 { // a null after a value, in the first such field
		return fmt.Errorf("request field %q: null after a value, which some servers ignore and others do not: %w",
			requestFieldNames[bits.TrailingZeros64(ambiguous)], errAmbiguousRequest)
	}
	set := r.given &^ r.null // the fields whose last value is not null
	*cr = chatRequest{Choices: 1}
	var err error
	if set&(1<<reqModel) != 0 {
		var ok bool
		if cr.Model, ok = modelName(r.values[reqModel]); !ok {
			return fieldTypeError(reqModel, "a string")
		}
	}
	if set&(1<<reqStream) != 0 { // absent or null: false
		if cr.Stream, err = requestBool(reqStream, r.values[reqStream]); err != nil {
			return err
		}
	}
	if set&(1<<reqServiceTier) != 0 {
		s, ok := jsonString(r.values[reqServiceTier])
		if !ok {
			return fieldTypeError(reqServiceTier, "a string")
		}
		switch s {
		case "auto", "default", "standard", "standard_only", "on_demand", "flex", "scale":
			// Standard prices or less (or the project's default tier,
			// which the body does not say); on_demand is Groq's standard.
		case "priority":
			cr.Tier = tierPriority
		case "fast": // OpenRouter serves fast mode as a service tier
			cr.Tier = tierFast
		default: // a tier still to come (OpenAI's "ultrafast", billed 6 times standard)
			cr.Tier = tier("@" + s)
		}
	}
	if set&(1<<reqSpeed) != 0 {
		s, ok := jsonString(r.values[reqSpeed])
		if !ok {
			return fieldTypeError(reqSpeed, "a string")
		}
		if s != "standard" { // "fast", or a speed still to come: not standard prices
			cr.Tier = tierFast
		}
	}
	if set&(1<<reqInferenceGeo) != 0 {
		s, ok := jsonString(r.values[reqInferenceGeo])
		if !ok {
			return fieldTypeError(reqInferenceGeo, "a string")
		}
		if s != "global" { // "us", or a region still to come: not standard prices
			cr.Tier, cr.GeoTier = cr.Tier+tier("@"+s), true
		}
	}
	// Most fields are absent: those read by a call are read only when
	// given (r.has), in the same order, so that the same error is first.
	if r.has(reqStreamOptions) {
		if cr.IncludeUsage, err = r.streamOpts.includeUsage(); err != nil {
			return err
		}
	}
	if r.has(reqExtraBody) {
		if err = checkExtraBody(r.values[reqExtraBody]); err != nil {
			return err
		}
	}
	var counts [reqBestOf + 1]int64
	for given := r.given & countBits; given != 0; given &= given - 1 {
		f := requestField(bits.TrailingZeros64(given))
		if counts[f], err = requestCount(f, r.values[f]); err != nil {
			return err
		}
	}
	cr.MaxOutput = max(counts[reqMaxTokens], counts[reqMaxCompletionTokens], counts[reqMaxOutputTokens])
	if cr.MaxOutput == 0 && r.given&(1<<reqThinking|1<<reqReasoningEffort) != 0 {
		// LiteLLM reads both, the later over the earlier: the larger.
		// LiteLLM turns reasoning_effort into a thinking budget for Claude
		// alone; other models (OpenAI's, which reason within their
		// output) keep OutputReserve.
		effort := int64(0)
		if namesClaude(cr.Model) {
			effort = effortThinkingBudget(r.values[reqReasoningEffort])
		}
		if t := max(thinkingBudget(r.values[reqThinking]), effort); t > 0 {
			cr.MaxOutput = -addTokens(t, liteLLMDefaultMaxTokens)
		}
	}
	// Each prompt of a batch gets its candidates; clamped, as the counts
	// are, so that Choices times a token count stays within int64.
	cr.Choices = max(1, counts[reqN], counts[reqBestOf])
	if r.has(reqCandidateCount) { // Gemini's n, through LiteLLM
		var c int64
		if c, err = requestCount(reqCandidateCount, r.values[reqCandidateCount]); err != nil {
			return err
		}
		cr.Choices = max(cr.Choices, c)
	}
	if r.has(reqPrompt) {
		cr.Choices = min(cr.Choices*promptBatch(r.values[reqPrompt]), maxUsageTokens)
	}

	length := func(f requestField) int64 { return int64(len(r.values[f])) * int64(set>>f&1) }
	prompt := r.values[reqPrompt]
	cr.StoredInput = set&(1<<reqPreviousResponseID|1<<reqConversation) != 0 || len(prompt) > 0 && prompt[0] == '{' ||
		r.items.reference || set&(1<<reqCachedContent) != 0 && string(r.values[reqCachedContent]) != `""` || r.thread
	if r.has(reqModalities) {
		if cr.Outputs, err = requestedOutputs(r.values[reqModalities]); err != nil {
			return err
		}
	}
	if set&(1<<reqAudio) != 0 {
		cr.Outputs |= audioOutput
	}
	cr.Background = r.has(reqBackground) && lenientTrue(r.values[reqBackground])
	if jobs := set & (1<<reqAssistantID | 1<<reqTrainingFile | 1<<reqTrainingFiles | 1<<reqInputFileID | 1<<reqRequests | 1<<reqPromptID | 1<<reqUserConfig); jobs != 0 {
		cr.Job = requestField(63 - bits.LeadingZeros64(jobs)) // the last of them
	}
	if r.has(reqTools) || r.has(reqWebSearchOptions) || r.has(reqPlugins) || r.has(reqMCPServers) { // else no tools, whatever max_tool_calls says
		if r.tools.err != nil {
			return r.tools.err
		}
		if cr.Tools, err = readServerTools(r.tools.list, r.values[reqWebSearchOptions], r.values[reqPlugins], r.values[reqMCPServers], r.values[reqMaxToolCalls]); err != nil {
			return err
		}
	}
	if strings.HasSuffix(cr.Model, ":online") { // OpenRouter's shorthand for its web plugin
		if cr.Tools == nil {
			cr.Tools = &serverTools{}
		}
		cr.Tools.List = append(cr.Tools.List, serverTool{Type: pluginPrefix + "web", MaxUses: webPluginResults})
	}
	cr.PromptTokens = bodyPromptTokens(body, r.images)
	if set&(1<<reqTools) != 0 {
		cr.PromptTokens += toolsTokenAllowance
	}
	content := length(reqMessages) + length(reqSystem) + length(reqPrompt) + length(reqInput) + length(reqTools) +
		length(reqInstructions) + length(reqFunctions)
	cr.EstimatedPromptTokens = estimatedTokens(content)

	if at != nil {
		*at = r.at
		at.setBody(body, r.members)
	}
	return nil
}

// bodyPromptTokens is the PromptTokens of body, before the allowance for
// its tools: a token a byte at most, and the allowance of its images.
func bodyPromptTokens(body []byte, images int64) int64 { return int64(len(body)) + images }

// estimatedTokens is the EstimatedPromptTokens of content bytes of
// prompt: four bytes a token, at least one.
func estimatedTokens(content int64) int64 { return max(1, content/4) }

// modelNames holds the model names of recent requests, so that a request
// naming one again costs neither an allocation nor a decoding: a process
// sends to a few models, over and over. A slot holds only a name of at
// least minCachedModel bytes that reads as it is written (no escapes, valid
// UTF-8), so that a raw value equal to it names it, and a string that
// begins with it and its closing quote is it (see readModel). A name's set
// of slots is picked by its first bytes (modelSet), which the names of one
// vendor's models share (gpt-4o, gpt-4o-mini), and its slot in the set by
// more bits of that hash, its length and its last byte (modelWay).
var modelNames [8][modelWays]atomic.Pointer[string]

// modelWays is how many names a set of modelNames holds.
const modelWays = 4

// minCachedModel and maxCachedModel are the shortest and the longest
// names modelNames holds.
const (
	minCachedModel = 4
	maxCachedModel = 64
)

// modelSet returns the set of modelNames for a name whose raw content
// begins with raw, at least minCachedModel bytes.
func modelSet(raw []byte) *[modelWays]atomic.Pointer[string] {
	return &modelNames[modelHash4(raw)>>29] // the top three bits
}

// modelHash4 is the Fibonacci hash of raw's first four bytes.
func modelHash4(raw []byte) uint32 { return binary.LittleEndian.Uint32(raw) * 0x9e3779b1 }

// modelWay returns the slot of modelNames for the name raw, whole: in its
// set, by the next bits of its first bytes' hash (names that begin apart
// but share a set), its length and its last byte (names that begin alike).
func modelWay(raw []byte) *atomic.Pointer[string] {
	return &modelSet(raw)[(int(modelHash4(raw)>>27)+len(raw)+int(raw[len(raw)-1]))%modelWays]
}

// modelName is jsonString for a model value, through modelNames.
func modelName(v []byte) (string, bool) {
	if len(v) < minCachedModel+2 || len(v) > maxCachedModel+2 || v[0] != '"' {
		return jsonString(v)
	}
	raw := v[1 : len(v)-1]
	slot := modelWay(raw)
	if s := slot.Load(); s != nil && *s == string(raw) {
		return *s, true
	}
	s, ok := jsonString(v)
	if ok && plainString(raw) {
		slot.Store(&s)
	}
	return s, ok
}

// inputItems finds, in an input array, a reference to an item the
// provider stored (OpenAI Responses' {"type": "item_reference", "id": …},
// whose type may be left out), which it bills as input although the body
// holds only its ID. An item is read as a reference when any spelling of
// "type" says so, or when it has an id but neither a type nor a role as a
// server reading keys as written sees them: every other item names one.
// (Inputs that are not items, such as Jina's multimodal embeddings,
// {"text": …} or {"image": …}, have no id.)
//
// It reads the items' keys as requestReader's lexer reports them, in the
// same pass: the body is whole, so a key's value is looked at where it
// follows, and an item begins at its first key. The zero value has read
// no item.
type inputItems struct {
	typed, role, id bool // what the item being read has
	// reasoning says the item being read is a reasoning item, and
	// encrypted that it carries its content (encrypted_content): a
	// reasoning item sent back by its id alone (store on) is the
	// provider's stored reasoning, which it bills as input.
	reasoning, encrypted bool
	reference            bool // an item read is a reference
}

// itemDepth is the nesting of an item's keys: in the body's object, in
// the input array.
const itemDepth = 3

// itemFields are the keys of an input item that tell a reference apart.
var itemFields = []string{"type", "role", "id", "encrypted_content"}

// read follows the string body[start:end] (with its quotes), at the depth
// of the items; escaped says it holds a backslash escape.
func (it *inputItems) read(body []byte, start, end int, escaped bool) {
	colon := skipSpace(body, end)
	if colon == len(body) || body[colon] != ':' {
		return // a value, not a key
	}
	if objectStart(body, start) {
		it.next()
	}
	v := skipSpace(body, colon+1)
	if v == len(body) {
		return
	}
	value, valueEscaped := body[v:v+1], false
	if body[v] == '"' {
		if e, esc := quoteEnd(body, v+1); e > v {
			value, valueEscaped = body[v:e+1], esc
		}
	}
	it.member(body[start+1:end-1], escaped, value, valueEscaped)
}

// member reads a member of the item being read: its key's raw content
// (keyEscaped says it holds a backslash escape) and its value, which is
// whole when it is a string (valueEscaped says the same of it), else at
// least its first byte.
func (it *inputItems) member(key []byte, keyEscaped bool, value []byte, valueEscaped bool) {
	// Most keys are told apart here, where it is inlined: only a key of
	// two or four bytes, or with an escape, may be an item field (see
	// itemField).
	if keyEscaped || len(key) == len("id") || len(key) == len("type") || len(key) == len("encrypted_content") {
		it.field(key, keyEscaped, value, valueEscaped)
	}
}

// field is member for a key that may be an item field.
func (it *inputItems) field(key []byte, keyEscaped bool, value []byte, valueEscaped bool) {
	i, m := itemField(key, keyEscaped)
	if m == noMatch || value[0] == 'n' { // null (a body the lexer refuses is refused)
		return
	}
	switch {
	case i == 0:
		it.reference = it.reference || isItemType(value, valueEscaped, "item_reference")
		it.reasoning = it.reasoning || isItemType(value, valueEscaped, "reasoning")
		it.typed = it.typed || m == exactMatch
	case i == 1 && m == exactMatch:
		it.role = true
	case i == 2:
		it.id = true
	case i == 3 && m == exactMatch:
		it.encrypted = true
	}
}

// itemField is lookupName(key, escaped, itemFields), in fewer
// instructions for a key without escapes: the names hold no k or s, so
// only their own letters, in either case, read as them (see foldsTo),
// and the length tells which one a key may be.
func itemField(key []byte, escaped bool) (int, nameMatch) {
	if escaped {
		return lookupName(key, true, itemFields)
	}
	var i int // in itemFields
	switch {
	case len(key) == len("id"):
		i = 2
	case len(key) == len("type") && key[0]|0x20 == 't':
		i = 0
	case len(key) == len("role"):
		i = 1
	case len(key) == len("encrypted_content"):
		i = 3
	default:
		return -1, noMatch
	}
	switch name := itemFields[i]; {
	case string(key) == name:
		return i, exactMatch
	case asciiEqualFold(key, name):
		return i, foldMatch
	}
	return -1, noMatch
}

// isItemType reports whether value, a raw JSON value, is a string that
// reads name ("item_reference", "reasoning"), in any ASCII case; escaped
// says it holds a backslash escape, and then the characters that fold to
// its letters read as them too ("reaſoning"): for "reasoning", which has an
// s, the safe side (a reasoning item by id is refused, or reserved).
func isItemType(value []byte, escaped bool, name string) bool {
	if len(value) < 2 || value[0] != '"' {
		return false
	}
	raw := value[1 : len(value)-1]
	if !escaped { // only its own letters, in either case, read as it: no k or s (see foldsTo)
		return len(raw) == len(name) && asciiEqualFold(raw, name)
	}
	return matchName(raw, true, name) != noMatch
}

// next ends the item being read.
func (it *inputItems) next() {
	it.reference = it.reference || it.id && !it.typed && !it.role || it.reasoning && it.id && !it.encrypted
	it.typed, it.role, it.id, it.reasoning, it.encrypted = false, false, false, false, false
}

// objectStart reports whether the key whose quote is at body[i] is its
// object's first: '{' comes before it.
func objectStart(body []byte, i int) bool {
	for i--; i > 0 && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'); i-- {
	}
	return i >= 0 && body[i] == '{'
}

// countBits has the bits of the fields read as counts, in the order
// requestCount reads them.
const countBits = 1<<reqMaxTokens | 1<<reqMaxCompletionTokens | 1<<reqMaxOutputTokens | 1<<reqN | 1<<reqBestOf

// onceBits has the bits of the fields whose value prices a request, which
// a body that gives one twice is refused for (see member): the counts,
// the model, what bounds thinking, the candidates, the tier and speed,
// the outputs asked for, what bounds server tools' calls, the models a
// relay may serve it with, whether it runs in the background, what a
// relay merges over the body, the prompts of a batch and a context
// cache. The prompt's text (whose every occurrence the body's bytes
// bound), tools (refused on their own), stream_options (read under either
// rule) and the fields whose presence alone is read are not in it.
const onceBits = countBits | 1<<reqModel | 1<<reqThinking | 1<<reqReasoningEffort | 1<<reqCandidateCount |
	1<<reqServiceTier | 1<<reqSpeed | 1<<reqInferenceGeo | 1<<reqModalities | 1<<reqWebSearchOptions | 1<<reqMaxToolCalls |
	1<<reqPlugins | 1<<reqMCPServers | 1<<reqModels | 1<<reqFallbacks | 1<<reqContextWindowFallbacks | 1<<reqContentPolicyFallbacks |
	1<<reqBackground | 1<<reqExtraBody | 1<<reqPrompt | 1<<reqCachedContent

// fallbackFields are the fields that name the models a relay may serve a
// request with instead of its model; fallbackBits has their bits.
var (
	fallbackFields = [...]requestField{reqModels, reqFallbacks, reqContextWindowFallbacks, reqContentPolicyFallbacks}
	fallbackBits   = func() (b uint64) {
		for _, f := range fallbackFields {
			b |= 1 << f
		}
		return b
	}()
)

// fallbackModels reads, from a request's fields, the models a relay may
// serve it with instead of its model: models and fallbacks, each null (or
// absent) or an array of model names or of objects naming one in "model"
// (OpenRouter's Anthropic-format fallbacks, Anthropic's server-side
// fallbacks, LiteLLM's, which run with the object's fields over the
// request's). A value of another shape, or a "model"
// key in another case or given twice, is refused: servers would read it
// differently, or not at all. An object's counts (see fallbackEntryKeys)
// and speed (Anthropic's), in any case of the key (encoding/json reads it
// so), are read too: the larger count when repeated, fast when any speed
// given is neither "standard" nor null. An object that sets another field
// this file reads (a thinking budget, a service tier, tools, extra_body,
// a stored prompt...) is refused: it would run the entry otherwise than
// the request is priced. LiteLLM's router updates the request's fields
// with each entry's in turn, in place, so that an entry runs with the
// counts and speed of the entries before it too: each is read so. A
// fallback to Claude of a request with a reasoning_effort and no output
// count runs with the max_tokens LiteLLM gives its thinking budget.
func (r *requestReader) fallbackModels() ([]fallbackModel, error) {
	var out []fallbackModel
	batch := int64(1) // the prompts of a batch, each with an entry's candidates
	if r.has(reqPrompt) {
		batch = promptBatch(r.values[reqPrompt])
	}
	var before fallbackModel // the largest counts, and any speed, of the entries read
	claude := r.claudeEffortBound()
	for _, f := range fallbackFields {
		if !r.has(f) {
			continue
		}
		v := r.values[f]
		if isJSONNull(v) {
			continue
		}
		if v[0] == '"' { // Anthropic's "default": the server picks the models
			return nil, fmt.Errorf("request field %q is %s, which leaves the server to pick the models it may serve the request with, at prices no budget knows before they run: name them as an array of model names or of {\"model\": name} objects: %w",
				requestFieldNames[f], v, ErrUnknownModel)
		}
		if v[0] != '[' {
			return nil, fieldTypeError(f, `an array of model names or of {"model": name} objects`)
		}
		for e := range validElements(v) {
			entry := fallbackModel{maxTokens: before.maxTokens, fast: before.fast, choices: before.choices}
			name, ok := jsonString(e)
			if ok {
				entry.name = name
			} else {
				own, err := readFallbackEntry(f, e, batch)
				if err != nil {
					return nil, err
				}
				before.maxTokens, before.choices = max(before.maxTokens, own.maxTokens), max(before.choices, own.choices)
				before.fast = before.fast || own.fast
				entry = fallbackModel{own.name, before.maxTokens, before.fast, before.choices}
			}
			if namesClaude(entry.name) {
				entry.maxTokens = max(entry.maxTokens, claude)
			}
			out = append(out, entry)
		}
	}
	return out, nil
}

// claudeEffortBound returns the max_tokens LiteLLM runs Claude with for
// the request's reasoning_effort when the request sets no output count:
// it turns the effort into a thinking budget for Claude alone (see
// effortThinkingBudget), so that a fallback to Claude runs with it
// whatever model the request names; 0 when none.
func (r *requestReader) claudeEffortBound() int64 {
	if !r.has(reqReasoningEffort) {
		return 0
	}
	for _, f := range [...]requestField{reqMaxTokens, reqMaxCompletionTokens, reqMaxOutputTokens} {
		if n, _ := requestCount(f, r.values[f]); n > 0 { // read by result before: no error
			return 0
		}
	}
	if e := effortThinkingBudget(r.values[reqReasoningEffort]); e > 0 {
		return addTokens(e, liteLLMDefaultMaxTokens)
	}
	return 0
}

// claudeEffortMaxTokens is claudeEffortBound for body, a request body
// parseChatRequest read without error that sets no output count, for a
// request that Claude runs whatever model it names (an engine the path
// names).
func claudeEffortMaxTokens(body []byte) int64 {
	var effort int64
	jsonMembers(body, func(key []byte, escaped bool, value []byte) error {
		if matchName(key, escaped, requestFieldNames[reqReasoningEffort]) == exactMatch {
			effort = effortThinkingBudget(value)
		}
		return nil
	})
	if effort == 0 {
		return 0
	}
	return addTokens(effort, liteLLMDefaultMaxTokens)
}

// readFallbackEntry reads e, an element of field f that is not a string,
// as an object naming a model (see fallbackModels); its candidates are
// multiplied by batch, the prompts of the request.
func readFallbackEntry(f requestField, e []byte, batch int64) (fallbackModel, error) {
	var r modelReader
	r.lex.objectOnly = true
	readText(&r.lex, &r.capture, e, &r)
	if r.bad || !r.lex.end() || !r.named {
		return fallbackModel{}, fieldTypeError(f, `an array of model names or of {"model": name} objects`)
	}
	entry := fallbackModel{name: r.model}
	models := 0
	for key, value := range validMembers(e) {
		escaped := bytes.IndexByte(key, '\\') >= 0
		k, m := lookupName(key, escaped, fallbackEntryKeys)
		if m == noMatch {
			if err := fallbackEntryField(f, key, escaped); err != nil {
				return fallbackModel{}, err
			}
			continue
		}
		switch k {
		case entryModel:
			if models++; models > 1 { // encoding/json and Python keep the last, gjson the first
				return fallbackModel{}, fmt.Errorf("request field %q: an entry names its \"model\" twice, which servers read differently (some keep the first, some the last): give it once: %w",
					requestFieldNames[f], errAmbiguousRequest)
			}
			continue
		case entrySpeed:
			s, isString := jsonString(value)
			entry.fast = entry.fast || !isJSONNull(value) && (!isString || s != "standard")
			continue
		}
		field := reqMaxTokens
		if k >= entryN {
			field = reqN
		}
		n, err := requestCount(field, value)
		if err != nil {
			return fallbackModel{}, fmt.Errorf("request field %q: an entry's %w", requestFieldNames[f], err)
		}
		if k >= entryN {
			entry.choices = max(entry.choices, min(n*batch, maxUsageTokens)) // both clamped: no overflow
		} else {
			entry.maxTokens = max(entry.maxTokens, n)
		}
	}
	return entry, nil
}

// fallbackEntryKeys are the members of a fallback entry that change what
// it costs and are priced: its model, its speed, and the counts that bound
// its output (those before entryN) and its candidates (from entryN on).
var fallbackEntryKeys = []string{"model", "speed", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of", "candidate_count"}

// The indexes of fallbackEntryKeys that are not counts of output, and the
// first count of candidates.
const (
	entryModel = 0
	entrySpeed = 1
	entryN     = 5
)

// fallbackEntryField refuses a member of a fallback entry of field f whose
// key, key (raw; escaped says it holds an escape), names in any case a
// request field this file reads for its price, other than those
// fallbackEntryKeys reads and the prompt's text (whose bytes the body's
// length bounds): LiteLLM runs the entry with it over the request's, so
// that a thinking budget, a service tier, tools, a stored prompt, output
// modalities or another relay's fields would run unpriced.
func fallbackEntryField(f requestField, key []byte, escaped bool) error {
	i, m := lookupName(key, escaped, requestFieldNames[:])
	if m == noMatch {
		return nil
	}
	switch requestField(i) {
	case reqMessages, reqSystem, reqInstructions, reqAnthropicVersion, reqStopSequences, reqStream:
		return nil
	}
	return fmt.Errorf("request field %q: an entry sets %q, which a relay (LiteLLM) runs over the request's for that model but the Budget does not price there: set it on the request, or leave it out of the entry",
		requestFieldNames[f], appendUnquoted(nil, key))
}

// threadContinues reports whether v, the valid value of a request's
// thread (Anthropic's message threads, beta message-threads-2026-08-12),
// continues a thread Anthropic holds: {"type": "continue",
// "previous_message_id": …} sends only the turn's new messages, and the
// conversation, system prompt and tools the thread holds are billed as
// input. Only null and {"type": "create"} (a thread the request starts,
// whose body holds its whole prompt) do not; any other value, one the
// server may read as continuing, does.
func threadContinues(v []byte) bool {
	if isJSONNull(v) {
		return false
	}
	create := false
	for key, value := range validMembers(v) {
		if string(key) != "type" || string(value) != `"create"` {
			return true
		}
		create = true
	}
	return !create
}

// checkExtraBody refuses an extra_body value (v, valid JSON, or empty)
// that sets a field this file reads: LiteLLM merges it over the body, so
// that the body's own field is not the one that runs (extra_body's model,
// max_tokens or n); other servers ignore it.
func checkExtraBody(v []byte) error {
	if len(v) == 0 || isJSONNull(v) {
		return nil
	}
	if v[0] != '{' {
		return fieldTypeError(reqExtraBody, "an object")
	}
	return jsonMembers(v, func(key []byte, escaped bool, _ []byte) error {
		if f, m := lookupName(key, escaped, requestFieldNames[:]); m != noMatch {
			return fmt.Errorf("request field \"extra_body\" sets %q, which LiteLLM merges over the body's and other servers ignore: %w",
				requestFieldNames[f], errAmbiguousRequest)
		}
		return nil
	})
}

// liteLLMDefaultMaxTokens is LiteLLM's DEFAULT_MAX_TOKENS
// (litellm/constants.py): a request that enables thinking without
// max_tokens (or max_completion_tokens) it runs with max_tokens set to the
// thinking budget plus this (update_optional_params_with_thinking_tokens,
// litellm/llms/base_llm/chat/transformation.py), for Claude on Anthropic,
// Bedrock and Vertex AI.
const liteLLMDefaultMaxTokens = 4096

// thinkingBudget returns the budget_tokens a thinking value (v, valid
// JSON, or empty) states, 0 when it states none: of keys that spell it in
// another case, the largest (the safe side), whatever its type says.
func thinkingBudget(v []byte) int64 {
	if len(v) == 0 || v[0] != '{' {
		return 0
	}
	var budget int64
	jsonMembers(v, func(key []byte, escaped bool, value []byte) error {
		if matchName(key, escaped, "budget_tokens") != noMatch && len(value) > 0 && '0' <= value[0] && value[0] <= '9' {
			budget = max(budget, ceilNumber(value))
		}
		return nil
	})
	return budget
}

// namesClaude reports whether model names one of Anthropic's Claude
// models, as LiteLLM's names and the providers' do ("claude-sonnet-4-5",
// "anthropic/claude-…", Bedrock's "anthropic.claude-…"), in any case.
func namesClaude(model string) bool {
	const claude = "claude"
	for i := 0; i+len(claude) <= len(model); i++ {
		if strings.EqualFold(model[i:i+len(claude)], claude) {
			return true
		}
	}
	return false
}

// effortThinkingBudget returns the thinking budget LiteLLM gives Claude
// for a reasoning_effort value (v, valid JSON, or empty), by default
// (AnthropicConfig._map_reasoning_effort, the
// DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET constants of
// litellm/constants.py); 0 for a value it gives none ("none", or not one
// of its levels). A level is read in any case, the safe side.
func effortThinkingBudget(v []byte) int64 {
	s, ok := jsonString(v)
	if !ok {
		return 0
	}
	switch strings.ToLower(s) {
	case "minimal":
		return 128
	case "low":
		return 1024
	case "medium":
		return 2048
	case "high":
		return 4096
	case "xhigh":
		return 8192
	case "max":
		return 16384
	}
	return 0
}

// promptBatch returns how many prompts a prompt value holds: OpenAI's
// completions endpoint answers each string, or token array, of an array of
// them with its own candidates, and bills them all. A string or an array of
// tokens is one prompt. v is valid JSON, or empty.
func promptBatch(v []byte) int64 {
	var elements int64
	batch := false
	for e := range validElements(v) {
		elements++
		batch = batch || e[0] == '"' || e[0] == '[' || e[0] == '{'
	}
	if !batch {
		return 1
	}
	return elements
}

func fieldTypeError(f requestField, want string) error {
	return fmt.Errorf("request field %q is not %s, which some servers refuse and others convert: %w",
		requestFieldNames[f], want, errAmbiguousRequest)
}

// requestedOutputs reads a modalities value: whether it holds "audio" or
// "image" (in any case, the safe side: a lenient server may take
// "Audio"), and that it states the outputs. Null, an empty array or
// absence reads none, stated or not: the model's default; a value that is
// not an array of strings is refused.
func requestedOutputs(v []byte) (outputKinds, error) {
	if len(v) == 0 || isJSONNull(v) {
		return 0, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(v, &elems) != nil {
		return 0, fieldTypeError(reqModalities, "an array of strings")
	}
	if len(elems) == 0 {
		// An empty list states nothing: relays pass it on as an empty
		// repeated field (Gemini's responseModalities), which protobuf
		// reads as one left out, so the model's default outputs.
		return 0, nil
	}
	out := outputsStated
	for _, e := range elems {
		s, ok := jsonString(e)
		if !ok {
			return 0, fieldTypeError(reqModalities, "an array of strings")
		}
		switch {
		case strings.EqualFold(s, "audio"):
			out |= audioOutput
		case strings.EqualFold(s, "image"):
			out |= imageOutput
		}
	}
	return out, nil
}

// lenientTrue reports whether a decoder as lenient as pydantic's reads v
// as true: true, the number 1, or a string such as "true" or "yes" in any
// case. Other values read false rather than being refused: the Images
// API's background is a colour ("transparent").
func lenientTrue(v []byte) bool {
	switch {
	case string(v) == "true":
		return true
	case len(v) > 0 && '0' <= v[0] && v[0] <= '9':
		f, err := strconv.ParseFloat(string(v), 64)
		return err == nil && f == 1
	}
	s, ok := jsonString(v)
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "1", "true", "t", "yes", "y", "on":
		return true
	}
	return false
}

// requestBool reads true, false or null (false, as when absent).
func requestBool(f requestField, v []byte) (bool, error) {
	switch string(v) {
	case "true":
		return true, nil
	case "", "false", "null":
		return false, nil
	}
	return false, fieldTypeError(f, "a boolean")
}

// requestCount reads a token or candidate count as the most a server could
// take it for: a number rounded up and clamped to maxUsageTokens. Zero,
// negatives, null and absence read 0.
func requestCount(f requestField, v []byte) (int64, error) {
	switch {
	case len(v) == 0 || isJSONNull(v):
		return 0, nil
	case v[0] == '-':
		return 0, nil // negative (the server refuses it)
	case '0' <= v[0] && v[0] <= '9':
		return ceilNumber(v), nil
	}
	return 0, fieldTypeError(f, "a number")
}

// ceilNumber returns a valid, non-negative JSON number rounded up to an
// integer and clamped to maxUsageTokens, without floating point: the
// number's digits d (integer and fraction) with the decimal point after
// point of them.
func ceilNumber(v []byte) int64 {
	i := skipDigits(v, 0)
	if i == len(v) && i <= 9 { // most counts: an integer of a few digits
		var n int64
		for _, c := range v {
			n = n*10 + int64(c-'0')
		}
		return min(n, maxUsageTokens)
	}
	intDigits := v[:i]
	var frac []byte
	if i < len(v) && v[i] == '.' {
		j := skipDigits(v, i+1)
		frac, i = v[i+1:j], j
	}
	exp := 0
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		neg := v[i] == '-'
		if v[i] == '-' || v[i] == '+' {
			i++
		}
		for ; i < len(v); i++ {
			exp = min(exp*10+int(v[i]-'0'), 1<<20) // far beyond any number of digits that matters
		}
		if neg {
			exp = -exp
		}
	}
	nd := len(intDigits) + len(frac)
	digit := func(k int) byte {
		if k < len(intDigits) {
			return intDigits[k]
		}
		return frac[k-len(intDigits)]
	}
	first := 0
	for first < nd && digit(first) == '0' {
		first++
	}
	if first == nd {
		return 0
	}
	point := len(intDigits) + exp - first // digits before the point, counted from the first non-zero one
	switch {
	case point > 10:
		return maxUsageTokens
	case point <= 0:
		return 1
	}
	var n int64
	for k := range point {
		n *= 10
		if first+k < nd {
			n += int64(digit(first+k) - '0')
		}
	}
	for k := first + point; k < nd; k++ {
		if digit(k) != '0' {
			n++ // round a fraction up: this is an upper bound
			break
		}
	}
	return min(n, maxUsageTokens)
}

func skipDigits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}

// streamOptionsReading is what the stream_options objects of a body say
// of include_usage, under each decoder's rule for repeated objects.
type streamOptionsReading struct {
	merged  int8 // encoding/json: the last include_usage of any of them (0 none, 1 false, 2 true)
	last    int8 // other decoders: that of the last object
	lastSet bool // the last stream_options was an object
}

// add reads one stream_options object, v, and reports whether it has
// members and the value of its last include_usage (a slice of v; nil when
// none).
func (s *streamOptionsReading) add(v []byte) (members bool, include []byte, err error) {
	var inc fieldReading
	err = jsonMembers(v, func(key []byte, escaped bool, value []byte) error {
		members = true
		switch matchName(key, escaped, "include_usage") {
		case exactMatch:
			inc.add(value)
		case foldMatch:
			return fmt.Errorf("request field %q in stream_options: a spelling of \"include_usage\" that some servers read and others ignore: %w",
				appendUnquoted(nil, key), errAmbiguousRequest)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errJSONSyntax) {
			return false, nil, fieldTypeError(reqStreamOptions, "an object")
		}
		return false, nil, err
	}
	if inc.ambiguous() {
		return false, nil, fmt.Errorf("request field \"include_usage\" in stream_options: null after a value: %w", errAmbiguousRequest)
	}
	b, err := requestBool(reqStreamOptions, inc.value)
	if err != nil {
		return false, nil, err
	}
	s.last, s.lastSet = 0, true
	if inc.value != nil && !isJSONNull(inc.value) {
		s.last = 1 + int8(b2u(b))
		s.merged = s.last
	}
	return members, inc.value, nil
}

func (s *streamOptionsReading) includeUsage() (bool, error) {
	if s.lastSet && (s.merged == 2) != (s.last == 2) {
		return false, fmt.Errorf("request field \"stream_options\" repeated: servers that merge and servers that replace read include_usage differently: %w", errAmbiguousRequest)
	}
	return s.last == 2, nil
}

func hasASCIIPrefixFold(s []byte, prefix string) bool {
	return len(s) >= len(prefix) && asciiEqualFold(s[:len(prefix)], prefix)
}

func hasASCIISuffixFold(s []byte, suffix string) bool {
	return len(s) >= len(suffix) && asciiEqualFold(s[len(s)-len(suffix):], suffix)
}
