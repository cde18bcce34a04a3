package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// Price is what one model costs, in Money per million tokens. The zero
// value makes a model free.
type Price struct {
	// Input is the price of prompt tokens.
	Input Money
	// CachedInput is the price of prompt tokens read from the provider's
	// prompt cache. Zero means the same as Input: a table that forgets the
	// discount overcounts rather than undercounts.
	CachedInput Money
	// CacheWrite is the price of prompt tokens written to the cache
	// (Anthropic bills them above Input). Zero means the same as Input.
	CacheWrite Money
	// CacheWrite1h is the price of prompt tokens written to Anthropic's
	// one-hour cache, which it bills above CacheWrite (twice Input, against
	// 1.25 times for the five-minute cache). Zero means the same as
	// CacheWrite: set it for models used with one-hour caching.
	CacheWrite1h Money
	// Output is the price of completion tokens, reasoning included.
	Output Money
	// AudioInput is the price of audio prompt tokens (OpenAI's
	// prompt_tokens_details.audio_tokens, billed far above text). Zero
	// means the same as Input: set it for models used with audio.
	AudioInput Money
	// AudioOutput is the price of audio completion tokens (OpenAI bills
	// gpt-4o-audio-preview's at $80 per million, against $10 for its text
	// output). Zero means the same as Output: set it for models used with
	// audio. A request that asks for audio output (modalities with "audio",
	// or an audio object) reserves its output at the dearer of Output and
	// AudioOutput.
	AudioOutput Money
	// ImageInput is the price of image prompt tokens, where the usage
	// counts them apart (prompt_tokens_details.image_tokens, or
	// input_tokens_details.image_tokens: OpenAI bills gpt-image-1's image
	// input at $10 per million, against $5 for its text). Zero means the
	// same as Input: set it for models used with images.
	ImageInput Money
	// ImageOutput is the price of image completion tokens
	// (completion_tokens_details.image_tokens, or
	// output_tokens_details.image_tokens: Google bills Gemini 2.5 Flash
	// Image's images at $30 per million, against $2.50 for its text).
	// Zero means the same as Output: set it for models that write images.
	// A request that asks for image output (modalities with "image"), or
	// that lists no outputs and so gets the model's default ones (Gemini
	// 2.5 Flash Image answers with images), reserves its output at the
	// dearer of Output and ImageOutput; one whose non-empty modalities
	// leave images out, at Output.
	ImageOutput Money
	// Request is a fee the model bills per request besides its tokens, in
	// dollars per request, not per million tokens: Perplexity's Sonar
	// models bill $5 to $14 per 1,000 requests, OpenAI's search models
	// search on every request. Each answer is charged it once; a request
	// reserves it for each candidate (n).
	Request Money
	// LongContext, when not nil, is what the model bills a request whose
	// prompt is long: Anthropic bills Claude Sonnet 4 and 4.5 prompts over
	// 200,000 input tokens (with the 1M-token context) at twice Input and
	// 1.5 times Output, every token of them; Gemini 2.5 Pro likewise.
	LongContext *LongContextPrice
}

// LongContextPrice is the price of a request whose prompt passes a size.
type LongContextPrice struct {
	// Above is the prompt size, in input tokens (cache reads and writes
	// included), past which the whole request is billed at Price. It must
	// be above 0.
	Above int64
	// Price prices every token of such a request, and its fee per request
	// (Request); fields left out default within it, as in any Price. Its
	// own LongContext must be nil.
	Price
}

// FallbackModel is the PriceTable key whose price applies to models the
// table does not list. Without it, requests for unlisted models are refused.
const FallbackModel = "*"

// PriceTable maps model names, as requests send them, to prices. The key
// FallbackModel ("*") prices every other model; a key with the suffix
// PriorityTier or FastTier ("gpt-4.1@priority", "*@fast") prices requests
// for that tier; one with "@" and another service_tier
// ("gpt-4.1@ultrafast") prices requests asking for that tier, and one with
// "@" and an inference_geo ("claude-opus-4-6@us",
// "claude-opus-4-6@fast@us") those asking for that region (Anthropic bills
// "us" at 1.1 times). A PriceTable is a plain map: safe for concurrent
// reads, not for writes; a Budget copies the table it is given.
//
// In JSON, prices are decimal dollars per million tokens, read exactly (no
// float rounding):
//
//	{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42},
//	 "claude-sonnet-4-5": {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "cache_write_1h": 6, "output": 15}}
//
// Audio prices are "audio_input" and "audio_output", image prices
// "image_input" and "image_output"; a fee per request is
// "request", in dollars per request; the prices of long prompts are
// "long_context", with their "above" (see LongContextPrice):
//
//	{"claude-sonnet-4-5": {"input": 3, "output": 15,
//	  "long_context": {"above": 200000, "input": 6, "output": 22.5}}}
type PriceTable map[string]Price

// LoadPrices reads a PriceTable from JSON (see PriceTable) and validates it.
// Every model needs "input" and "output" (an explicit 0 is allowed, so that
// a typo cannot make a model free); unknown fields, negative prices,
// amounts that are not decimal numbers, a price above 0 that rounds to $0
// at the nano-dollar, a model listed twice, a price's field written twice
// (in any case), an empty model name or one with spaces around it, null
// in place of the table and data after the table are errors. An error
// names the model and the field at fault, or the line and column where the
// JSON breaks. A UTF-8 byte order mark before the table is skipped; a
// UTF-16 file is an error that says so.
func LoadPrices(r io.Reader) (PriceTable, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("httpguard: prices: %w", err)
	}
	// A UTF-8 byte order mark, which some editors write (Windows
	// PowerShell 5's Out-File -Encoding utf8), is no JSON but says nothing.
	b = bytes.TrimPrefix(b, []byte(utf8BOM))
	if bytes.HasPrefix(b, []byte{0xFF, 0xFE}) || bytes.HasPrefix(b, []byte{0xFE, 0xFF}) {
		// UTF-16's byte order mark: JSON is UTF-8 (RFC 8259), and the
		// decoder's "invalid character 'ÿ'" would say nothing of why.
		return nil, errors.New("httpguard: prices: the file is UTF-16 (as Windows PowerShell 5 writes with > or Out-File): " +
			"write it as UTF-8 (Out-File -Encoding utf8, or Set-Content)")
	}
	var t PriceTable
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&t); err != nil {
		return nil, pricesSyntaxError(b, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("httpguard: prices: unexpected data after the price table")
	}
	if string(bytes.TrimSpace(b)) == "null" { // which UnmarshalJSON leaves alone, as encoding/json does
		return nil, errors.New("httpguard: prices: " + pricesShape + ", got null")
	}
	return t, nil
}

// pricesShape is what a price table looks like, for errors.
const pricesShape = `want a JSON object of model names to prices, such as {"deepseek-v3.2": {"input": 0.28, "output": 0.42}}`

// pricesSyntaxError says where in b the JSON that LoadPrices read went
// wrong, by line and column, as an editor shows it.
func pricesSyntaxError(b []byte, err error) error {
	var se *json.SyntaxError
	switch {
	case strings.HasPrefix(err.Error(), "httpguard: "): // from UnmarshalJSON
		return err
	case err == io.EOF:
		return errors.New("httpguard: prices: the input is empty: " + pricesShape)
	case err == io.ErrUnexpectedEOF:
		line, col := lineColumn(b, len(bytes.TrimRight(b, " \t\r\n")))
		return fmt.Errorf("httpguard: prices: line %d, column %d: the JSON ends early (a '}' or ']' missing)", line, col)
	case errors.As(err, &se):
		line, col := lineColumn(b, int(se.Offset)-1)
		return fmt.Errorf("httpguard: prices: line %d, column %d: %w", line, col, err)
	}
	return fmt.Errorf("httpguard: prices: %w", err)
}

// lineColumn returns the line and column, from 1, of byte i of b.
func lineColumn(b []byte, i int) (line, col int) {
	i = max(0, min(i, len(b)))
	nl := bytes.LastIndexByte(b[:i], '\n')
	return bytes.Count(b[:i], []byte{'\n'}) + 1, i - nl
}

// jsonModelPrice is one model's entry in a price table's JSON.
type jsonModelPrice struct {
	jsonPrice
	LongContext *struct {
		Above jsonAmount `json:"above"`
		jsonPrice
	} `json:"long_context"`
}

// UnmarshalJSON reads the JSON form described at PriceTable, with the
// checks LoadPrices lists.
func (t *PriceTable) UnmarshalJSON(b []byte) error {
	if err := checkRepeatedKeys(b); err != nil {
		return fmt.Errorf("httpguard: prices: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		if te, ok := err.(*json.UnmarshalTypeError); ok {
			return fmt.Errorf("httpguard: prices: %s, got %s", pricesShape, jsonKind(te.Value))
		}
		return fmt.Errorf("httpguard: prices: %w", err)
	}
	models := make([]string, 0, len(raw))
	for model := range raw {
		models = append(models, model)
	}
	sort.Strings(models) // report the same error every time
	out := make(PriceTable, len(raw))
	for _, model := range models {
		// One model at a time, so that an error names it.
		var r jsonModelPrice
		dec := json.NewDecoder(bytes.NewReader(raw[model]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("httpguard: prices: model %q: %s", model, modelPriceError(err))
		}
		p, err := r.price()
		if err != nil {
			return fmt.Errorf("httpguard: prices: model %q: %w", model, err)
		}
		if lc := r.LongContext; lc != nil {
			num, err := lc.Above.number()
			above, perr := strconv.ParseInt(num, 10, 64)
			if err != nil || perr != nil || above <= 0 {
				return fmt.Errorf("httpguard: prices: model %q: long_context: above must be a whole number of tokens above 0, got %q", model, lc.Above.text())
			}
			lp, err := lc.price()
			if err != nil {
				return fmt.Errorf("httpguard: prices: model %q: long_context: %w", model, err)
			}
			p.LongContext = &LongContextPrice{Above: above, Price: lp}
		}
		out[model] = p
	}
	if err := out.validate(); err != nil {
		return fmt.Errorf("httpguard: prices: %w", err)
	}
	*t = out
	return nil
}

// modelPriceError says what decoding one model's price found, in the
// JSON's terms: encoding/json's own errors name Go types.
func modelPriceError(err error) string {
	if te, ok := err.(*json.UnmarshalTypeError); ok {
		got := jsonKind(te.Value)
		switch te.Field {
		case "":
			return `want an object of prices in dollars per million tokens, such as {"input": 0.28, "output": 0.42}, got ` + got
		case "long_context":
			return `long_context: want an object, such as {"above": 200000, "input": 6, "output": 22.5}, got ` + got
		}
		return fmt.Sprintf("%s: %s is not allowed there", te.Field, got)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field ") {
		msg += " (" + priceFields + ")"
	}
	return msg
}

// priceFields lists the fields of a price in JSON, for the error that
// names one it does not know: a typo's fix is then in the error.
const priceFields = "known: input, cached_input, cache_write, cache_write_1h, output, audio_input, audio_output, " +
	"image_input, image_output, request, long_context; and above, in long_context"

// jsonKind names, with its article, the kind of JSON value that
// encoding/json's UnmarshalTypeError.Value describes ("number", "number
// -1", "array", ...).
func jsonKind(value string) string {
	kind, _, _ := strings.Cut(value, " ")
	switch kind {
	case "array", "object":
		return "an " + kind
	case "bool":
		return "true or false"
	}
	return "a " + kind
}

// checkRepeatedKeys rejects a table that names a model twice, or a
// price's field twice in one object, in any case ("output", then
// "Output": encoding/json matches field names so): encoding/json would
// keep the last silently, and a second entry of 0 would make a model
// free. A malformed table passes, for the decoder to report.
func checkRepeatedKeys(b []byte) error {
	type object struct {
		keys   []string            // in a price: few, compared folded
		models map[string]struct{} // in the table: many, compared exactly
		last   string              // the latest key
		key    bool                // the next token is a key
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF, or malformed: the decoder says so
		}
		if n := len(stack); n > 0 && stack[n-1] != nil && stack[n-1].key {
			if k, ok := tok.(string); ok {
				top := stack[n-1]
				if n == 1 {
					if _, dup := top.models[k]; dup {
						return fmt.Errorf("model %q is listed twice", k)
					}
					top.models[k] = struct{}{}
				} else {
					for _, prev := range top.keys {
						if strings.EqualFold(prev, k) {
							return fmt.Errorf("model %q: %q and %q name one field: write it once", stack[0].last, prev, k)
						}
					}
					top.keys = append(top.keys, k)
				}
				top.last, top.key = k, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			o := &object{key: true}
			if len(stack) == 0 {
				o.models = map[string]struct{}{}
			}
			stack = append(stack, o)
			continue
		case json.Delim('['):
			if len(stack) == 0 {
				return nil // not a table: the decoder says so
			}
			stack = append(stack, nil)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].key = true // a value ended: a key comes next
		}
	}
}

// jsonPrice is a Price as JSON writes it: decimal dollars, read exactly.
type jsonPrice struct {
	Input        jsonAmount `json:"input"`
	CachedInput  jsonAmount `json:"cached_input"`
	CacheWrite   jsonAmount `json:"cache_write"`
	CacheWrite1h jsonAmount `json:"cache_write_1h"`
	Output       jsonAmount `json:"output"`
	AudioInput   jsonAmount `json:"audio_input"`
	AudioOutput  jsonAmount `json:"audio_output"`
	ImageInput   jsonAmount `json:"image_input"`
	ImageOutput  jsonAmount `json:"image_output"`
	Request      jsonAmount `json:"request"`
}

// jsonAmount is an amount as a price table's JSON writes it: its raw JSON
// value, "" when absent or null. It takes what json.Number takes (a number,
// or a string holding one); anything else is kept for number to report
// with the field's name, which encoding/json's own error would give as a
// Go type's.
type jsonAmount string

func (a *jsonAmount) UnmarshalJSON(b []byte) error {
	if string(b) != "null" { // null leaves the field out, as for json.Number
		*a = jsonAmount(b)
	}
	return nil
}

// number returns the amount's decimal text, "" when absent, or an error
// saying what the JSON holds instead of a number.
func (a jsonAmount) number() (string, error) {
	if a == "" || isJSONNumber(string(a)) {
		return string(a), nil
	}
	if a[0] == '"' {
		var s string
		if json.Unmarshal([]byte(a), &s) == nil && isJSONNumber(s) {
			return s, nil
		}
	}
	// The raw JSON may hold bytes that are not UTF-8 (encoding/json
	// takes them in strings): the error, which a JSON log or a terminal
	// shows, says U+FFFD for them, as the decoded string would.
	got := strings.ToValidUTF8(string(a), "\uFFFD")
	if len(got) > 40 {
		cut := 40
		for cut > 0 && !utf8.RuneStart(got[cut]) {
			cut-- // not inside a character: the error stays UTF-8
		}
		got = got[:cut] + "…"
	}
	return "", fmt.Errorf("want a number of dollars, got %s", got)
}

// text is the amount as written, a string without its quotes.
func (a jsonAmount) text() string {
	var s string
	if json.Unmarshal([]byte(a), &s) == nil {
		return s
	}
	return string(a)
}

// isJSONNumber reports whether s is one JSON number and nothing else.
func isJSONNumber(s string) bool {
	return s != "" && (s[0] == '-' || '0' <= s[0] && s[0] <= '9') && strings.TrimSpace(s) == s && json.Valid([]byte(s))
}

func (r *jsonPrice) price() (Price, error) {
	var p Price
	for _, f := range [...]struct {
		name   string
		amount jsonAmount
		dst    *Money
	}{{"input", r.Input, &p.Input}, {"cached_input", r.CachedInput, &p.CachedInput},
		{"cache_write", r.CacheWrite, &p.CacheWrite}, {"cache_write_1h", r.CacheWrite1h, &p.CacheWrite1h}, {"output", r.Output, &p.Output},
		{"audio_input", r.AudioInput, &p.AudioInput}, {"audio_output", r.AudioOutput, &p.AudioOutput},
		{"image_input", r.ImageInput, &p.ImageInput}, {"image_output", r.ImageOutput, &p.ImageOutput}, {"request", r.Request, &p.Request}} {
		num, err := f.amount.number()
		if err != nil {
			return Price{}, fmt.Errorf("%s: %w", f.name, err)
		}
		if num == "" {
			if f.name == "input" || f.name == "output" {
				return Price{}, fmt.Errorf("%s is missing (write 0 if it is free)", f.name)
			}
			continue
		}
		m, err := ParseMoney(num)
		if err != nil {
			return Price{}, fmt.Errorf("%s: %s", f.name, strings.TrimPrefix(err.Error(), "httpguard: "))
		}
		if mantissa, _, _ := strings.Cut(strings.ToLower(num), "e"); m == 0 && strings.ContainsAny(mantissa, "123456789") {
			// Rounded to the nano-dollar, it would be 0: a price written
			// above zero would make the model (or the field) free.
			return Price{}, fmt.Errorf("%s: %s is below a nano-dollar (write 0 if it is free)", f.name, num)
		}
		*f.dst = m
	}
	return p, nil
}

// validate rejects model names with spaces around them, negative prices
// and prices so large that a billion tokens would overflow Money (over
// $9.2 million per million tokens).
func (t PriceTable) validate() error {
	models := make([]string, 0, len(t))
	for m := range t {
		models = append(models, m)
	}
	sort.Strings(models) // report the same error every time
	for _, m := range models {
		p := t[m]
		if m == "" {
			// No request names the empty model: one without a model is
			// refused, and an Azure deployment names its own.
			return errors.New(`model "": an empty name matches no request: name the model, or write "*" for every model the table does not list`)
		}
		if strings.TrimSpace(m) != m {
			// A request names "gpt-4.1", not " gpt-4.1": such a key is a
			// slip that leaves the model to "*" (or refused).
			return fmt.Errorf("model %q: a name with spaces around it is not the model's: write it without them", m)
		}
		if err := p.validate(); err != nil {
			return fmt.Errorf("model %q: %w", m, err)
		}
		lc := p.LongContext
		if lc == nil {
			continue
		}
		switch err := lc.Price.validate(); {
		case lc.Above <= 0:
			return fmt.Errorf("model %q: LongContext.Above must be > 0, got %d", m, lc.Above)
		case lc.LongContext != nil:
			return fmt.Errorf("model %q: LongContext.LongContext must be nil", m)
		case err != nil:
			return fmt.Errorf("model %q: LongContext.%w", m, err)
		}
	}
	return nil
}

func (p *Price) validate() error {
	for _, f := range [...]struct {
		name string
		v    Money
	}{{"Input", p.Input}, {"CachedInput", p.CachedInput}, {"CacheWrite", p.CacheWrite}, {"CacheWrite1h", p.CacheWrite1h}, {"Output", p.Output},
		{"AudioInput", p.AudioInput}, {"AudioOutput", p.AudioOutput}, {"ImageInput", p.ImageInput}, {"ImageOutput", p.ImageOutput}} {
		if f.v < 0 {
			return fmt.Errorf("%s must be >= 0, got %v", f.name, f.v)
		}
		if f.v > maxPrice {
			return fmt.Errorf("%s must be <= %v per million tokens, got %v", f.name, maxPrice, f.v)
		}
	}
	if p.Request < 0 || p.Request > maxToolPrice {
		return fmt.Errorf("Request must be in [$0, %v] per request, got %v", maxToolPrice, p.Request)
	}
	return nil
}

// maxPrice keeps maxUsageTokens × price within Money.
const maxPrice = maxMoney / (maxUsageTokens / 1_000_000)

// ExamplePrices returns an example table, in dollars per million tokens
// (input / cached input / output), from the LiteLLM model cost map (mirror
// dated 2026-07): deepseek-chat and deepseek-v3.2 0.28/0.028/0.42, gpt-4.1
// 2.00/0.50/8.00, gpt-4o-mini 0.15/0.075/0.60, claude-sonnet-4-5
// 3.00/0.30/15.00 (cache writes 3.75, one-hour cache writes 6.00),
// gemini-2.5-flash 0.30/0.03/2.50; and, by Anthropic's rule for its
// 1M-token context (twice the input prices, 1.5 times the output price),
// claude-sonnet-4-5's long_context past 200,000 input tokens:
// 6.00/0.60/22.50, cache writes 7.50 and 12.00.
//
// It is an example, never applied by default: prices change, and relays such
// as HolySheep price differently. Load your provider's prices with
// LoadPrices. The table has no FallbackModel entry.
func ExamplePrices() PriceTable {
	deepseek := Price{Input: 28 * Cent, CachedInput: 28 * Cent / 10, Output: 42 * Cent}
	return PriceTable{
		"deepseek-chat": deepseek,
		"deepseek-v3.2": deepseek,
		"gpt-4.1":       {Input: 2 * Dollar, CachedInput: 50 * Cent, Output: 8 * Dollar},
		"gpt-4o-mini":   {Input: 15 * Cent, CachedInput: 75 * Cent / 10, Output: 60 * Cent},
		"claude-sonnet-4-5": {Input: 3 * Dollar, CachedInput: 30 * Cent, CacheWrite: 375 * Cent, CacheWrite1h: 6 * Dollar, Output: 15 * Dollar,
			LongContext: &LongContextPrice{Above: 200_000, Price: Price{Input: 6 * Dollar, CachedInput: 60 * Cent, CacheWrite: 750 * Cent, CacheWrite1h: 12 * Dollar, Output: 225 * Dollar / 10}}},
		"gemini-2.5-flash": {Input: 30 * Cent, CachedInput: 3 * Cent, Output: 250 * Cent},
	}
}

// The suffixes of PriceTable keys that price a model's requests for a
// tier billed above its standard prices: "gpt-4.1@priority", or
// "*@priority" for every model the table does not list. A request asking
// for such a tier is priced by its model's entry for the tier, and refused
// when there is none: a model the table lists is never priced by a "*"
// entry.
const (
	// PriorityTier prices OpenAI's Priority processing ("service_tier":
	// "priority"; gpt-4.1: $3.50 in, $14 out per million, against $2 and
	// $8), and Vertex AI's Priority PayGo, which a request asks for in
	// the header X-Vertex-AI-LLM-Shared-Request-Type. It also prices an
	// answer that says it ran at Priority ("service_tier": "priority") to
	// a request that did not ask for it, as a project whose default tier
	// is Priority runs them; when the table has no such entry for its
	// model, that answer is charged three times its standard prices
	// (OpenAI's Priority prices are up to 2.5 times), as it was sent and
	// cannot be refused.
	PriorityTier = "@priority"
	// FastTier prices fast mode: Anthropic's "speed": "fast" (Claude Opus
	// 4.6 at six times its standard prices), any other speed but
	// "standard", and OpenRouter's "service_tier": "fast".
	FastTier = "@fast"
)

// tier is a billing tier a request asks for, as the suffix of the
// PriceTable keys that price it: "" for standard prices, PriorityTier,
// FastTier, or "@" and the value of a service_tier the Budget does not
// know ("@ultrafast"); then "@" and an inference_geo other than "global"
// ("@us", "@fast@us").
type tier string

const (
	tierStandard tier = ""
	tierPriority tier = PriorityTier
	tierFast     tier = FastTier
)

// suffix is the tier's PriceTable key suffix, "" for standard prices.
func (t tier) suffix() string { return string(t) }

// tierWhat says what in the request asks for its tier, for errors.
func (cr *chatRequest) tierWhat() string {
	service, geo := string(cr.Tier), ""
	if cr.GeoTier {
		i := strings.LastIndexByte(service, '@')
		service, geo = service[:i], service[i+1:]
	}
	switch {
	case geo == "":
		return tier(service).String()
	case service == "":
		return fmt.Sprintf("inference_geo %q", geo)
	}
	return fmt.Sprintf("%v and inference_geo %q", tier(service), geo)
}

// String says what asks for the tier, for errors.
func (t tier) String() string {
	switch t {
	case tierPriority:
		return `service_tier "priority"`
	case tierFast:
		return `fast mode (a "speed" but "standard", or service_tier "fast")`
	}
	return fmt.Sprintf("service_tier %q", strings.TrimPrefix(string(t), "@"))
}

// unpricedFastFactor bounds, in times a model's standard price, what fast
// mode or a service tier the Budget does not know bills: Anthropic bills
// Claude Opus 4.6's fast mode at 6 times, OpenAI its "ultrafast" tier 6
// times.
const unpricedFastFactor = 6

// unpricedTierFactor bounds, in times its standard price, what a model
// the table has no entry for at cr's tier bills at that tier: the model
// an answer says served cr, which cr did not name (see answerCharge).
func (cr *chatRequest) unpricedTierFactor() int64 {
	service, f := string(cr.Tier), int64(1)
	if cr.GeoTier {
		service, f = service[:strings.LastIndexByte(service, '@')], unpricedGeoFactor
	}
	switch tier(service) {
	case tierStandard:
		return f
	case tierPriority:
		return f * unpricedPriorityFactor
	}
	return f * unpricedFastFactor
}

// unpricedPriorityFactor is what an answer that ran at Priority is
// charged, in times its standard price, when the table has no Priority
// price for its model: it was sent, and cannot be refused. OpenAI's
// Priority prices are 1.7 to 2.5 times its standard ones (gpt-4o-mini
// $0.25 against $0.15 in; gpt-4.1 1.75 times; gpt-5 twice; gpt-5.5 $12.50
// against $5): 3 bounds them with a margin, so that the spend cap holds.
// The reservation would not: it prices max_tokens at the standard price.
const unpricedPriorityFactor = 3

// unpricedGeoFactor is what an answer that ran in a region its request
// did not ask for (a workspace's default inference geo) is charged, in
// times the price it was reserved at, when the table has no entry for
// the region: Anthropic bills US-only inference at 1.1 times, and a
// region still to come is not known; 2 bounds it with a margin.
const unpricedGeoFactor = 2

// times returns p with every price, and its fee per request, multiplied by
// n (saturating).
func (p Price) times(n int64) Price {
	q := Price{Input: mulSat(n, p.Input), CachedInput: mulSat(n, p.CachedInput), CacheWrite: mulSat(n, p.CacheWrite),
		CacheWrite1h: mulSat(n, p.CacheWrite1h), Output: mulSat(n, p.Output), AudioInput: mulSat(n, p.AudioInput),
		AudioOutput: mulSat(n, p.AudioOutput), ImageInput: mulSat(n, p.ImageInput), ImageOutput: mulSat(n, p.ImageOutput),
		Request: mulSat(n, p.Request)}
	if lc := p.LongContext; lc != nil {
		q.LongContext = &LongContextPrice{Above: lc.Above, Price: lc.Price.times(n)}
	}
	return q
}

// lookup returns the price of model at tier t, and whether the table's
// fallback entry gave it (for a model the table does not list) rather
// than the model's own.
func (pt PriceTable) lookup(model string, t tier) (p Price, fallback, ok bool) {
	return lookupEntry(pt, model, t)
}

// lookupEntry is PriceTable.lookup in a table of prices or of pointers to
// them (see PriceTable.pointers).
func lookupEntry[P any](pt map[string]P, model string, t tier) (p P, fallback, ok bool) {
	suffix := t.suffix()
	if p, ok := pt[model+suffix]; ok {
		return p, false, true
	}
	if _, listed := pt[model]; listed && suffix != "" {
		return p, false, false // its standard price is no bound on the tier's
	}
	p, ok = pt[FallbackModel+suffix]
	return p, true, ok
}

// clone returns a copy of pt that shares nothing with it: its
// long-context prices copied too, so that a caller who edits its table
// after NewBudget changes no price of the Budget's.
func (pt PriceTable) clone() PriceTable {
	if pt == nil {
		return nil
	}
	c := make(PriceTable, len(pt))
	for name, p := range pt {
		if lc := p.LongContext; lc != nil {
			long := *lc
			p.LongContext = &long
		}
		c[name] = p
	}
	return c
}

// pointers returns pt's entries, each a pointer to its price, which must
// not be changed: an attempt keeps a pointer rather than a copy of its
// price, so that it stays in its allocation size class.
func (pt PriceTable) pointers() map[string]*Price {
	prices, m := make([]Price, 0, len(pt)), make(map[string]*Price, len(pt))
	for name, p := range pt {
		prices = append(prices, p)
		m[name] = &prices[len(prices)-1]
	}
	return m
}

// priceCache holds the prices a Budget looked up, by model and tier, so
// that a request for a model priced before costs no map access: a process
// sends to a few models, over and over. The table does not change after
// NewBudget (see firstSlots).
type priceCache firstSlots[priceKey, foundPrice]

type priceKey struct {
	model string
	tier  tier
}

// foundPrice is what lookupEntry returns, and the hash of the model
// looked up, which an attempt compares with the model its answer names
// (see servedAsNamed): kept with the price, it is hashed once. The hash
// is zero, which no answer's matches, when another model the table lists
// hashes alike: an answer naming either is then priced at both.
type foundPrice struct {
	price        *Price // nil when not ok
	fallback, ok bool
	model        modelHash
}

// lookup is lookupEntry(pt, ...) through c: the price kept in c, which
// must not be changed, or else the one looked up into *miss. served is
// the table's names by their hash (Budget.served).
func (c *priceCache) lookup(pt map[string]*Price, served map[modelHash][]string, model string, t tier, miss *foundPrice) *foundPrice {
	return (*firstSlots[priceKey, foundPrice])(c).get(model, priceKey{model, t}, func(k priceKey) (f foundPrice) {
		f.price, f.fallback, f.ok = lookupEntry(pt, k.model, k.tier)
		f.model = hashModel(k.model)
		for _, name := range served[f.model] {
			if name != k.model {
				f.model = 0
			}
		}
		return f
	}, miss)
}

// firstSlots holds values computed from their keys, whose values never
// change, in slots that each keep the first key and value put there, so
// that it allocates at most once a slot; a key whose slot keeps another
// is computed each time.
type firstSlots[K comparable, V any] [8]atomic.Pointer[firstSlot[K, V]]

type firstSlot[K comparable, V any] struct {
	key   K
	value V
}

// get returns the value of key, whose slot name picks: the one kept,
// which must not be changed, or compute(key), put in *miss (then kept,
// when the slot is free). An empty name picks no slot.
func (s *firstSlots[K, V]) get(name string, key K, compute func(K) V, miss *V) *V {
	if name == "" {
		*miss = compute(key)
		return miss
	}
	slot := &s[uint(len(name)+int(name[len(name)-1]))%uint(len(s))]
	if e := slot.Load(); e != nil && e.key == key {
		return &e.value
	}
	*miss = compute(key)
	if slot.Load() == nil {
		slot.CompareAndSwap(nil, &firstSlot[K, V]{key, *miss})
	}
	return miss
}

// priceOr returns v, or dflt when v is zero: a price left out means the
// price it defaults to.
func priceOr(v, dflt Money) Money {
	if v == 0 {
		return dflt
	}
	return v
}

func (p Price) cachedInput() Money  { return priceOr(p.CachedInput, p.Input) }
func (p Price) cacheWrite() Money   { return priceOr(p.CacheWrite, p.Input) }
func (p Price) cacheWrite1h() Money { return priceOr(p.CacheWrite1h, p.cacheWrite()) }
func (p Price) audioInput() Money   { return priceOr(p.AudioInput, p.Input) }
func (p Price) audioOutput() Money  { return priceOr(p.AudioOutput, p.Output) }
func (p Price) imageInput() Money   { return priceOr(p.ImageInput, p.Input) }
func (p Price) imageOutput() Money  { return priceOr(p.ImageOutput, p.Output) }

// reserve returns the most a request can cost: its prompt bound at the
// dearest input price, plus its output bound (at the dearest of the text
// price and those of the kinds of output beyond text the request asks
// for, audio or image), rounded up to the next nano-dollar so that the cap
// is never undercounted, plus the fee per request of each of its
// candidates. A prompt bound past LongContext's Above is priced at the
// dearer of the two prices: the prompt may be long.
func (p *Price) reserve(promptTokens, outputTokens int64, outputs outputKinds, candidates int64) Money {
	r := p.reserveTokens(promptTokens, outputTokens, outputs)
	r = addSat(r, mulSat(candidates, p.Request))
	if lc := p.LongContext; lc != nil && promptTokens > lc.Above {
		long := lc.Price.reserveTokens(promptTokens, outputTokens, outputs)
		r = max(r, addSat(long, mulSat(candidates, lc.Request)))
	}
	return r
}

// reserveTokens is reserve's price of the tokens, at p's own rates.
func (p *Price) reserveTokens(promptTokens, outputTokens int64, outputs outputKinds) Money {
	// A price left out (0) means one of the others here, so the dearest
	// of the fields is the dearest of the prices they mean, or 0, which
	// costSum adds as nothing, as it adds a negative price: no call of
	// priceOr.
	var c costSum
	c.add(promptTokens, max(p.Input, p.CachedInput, p.CacheWrite, p.CacheWrite1h))
	out := p.Output
	if outputs&audioOutput != 0 {
		out = max(out, p.AudioOutput)
	}
	// Images unless the request lists outputs without them: a model that
	// writes images may answer one that lists none with them.
	if outputs&(imageOutput|outputsStated) != outputsStated {
		out = max(out, p.ImageOutput)
	}
	c.add(outputTokens, out)
	return c.money(true)
}

// Cost returns what usage u costs at p, rounded once, half up, to the
// nearest nano-dollar: within half a nano-dollar of the exact price; plus
// the fee per request, when p has one. Usage whose InputTokens pass
// LongContext's Above costs what it costs at LongContext's Price. Cached
// input tokens are priced at CachedInput, one-hour cache writes at
// CacheWrite1h, other cache writes at CacheWrite, audio input tokens at
// AudioInput, image input tokens at ImageInput; the rest of InputTokens at
// Input. Audio output tokens are priced at AudioOutput, image output
// tokens at ImageOutput, the rest of OutputTokens at Output. Audio and
// image tokens that must also have been cached (when cached, cache-write,
// audio and image tokens add up to more than InputTokens) are priced as
// audio or image, without the cache discount, or as cached input when
// that is the dearer: usage does not say what cached audio or images
// cost.
func (p Price) Cost(u Usage) Money { return costAt(&p, &u) }

// costAt is Cost, reading p and u in place: settling an attempt prices
// its usage once per request, and both are long to copy.
func costAt(p *Price, u *Usage) Money {
	if lc := p.LongContext; lc != nil && u.InputTokens > lc.Above {
		if u.mixed {
			// Two readings mixed (see coverBoth): one may be under the
			// size, billed at p, which the table may price above
			// LongContext's Price.
			base := *p
			base.LongContext = nil
			return max(costAt(&base, u), costAt(&lc.Price, u))
		}
		p = &lc.Price
	}
	var c costSum
	if u.CachedInputTokens|u.CacheWriteInputTokens|u.CacheWrite1hInputTokens|u.AudioInputTokens|u.AudioOutputTokens|
		u.ImageInputTokens|u.ImageOutputTokens == 0 {
		// Text in and out only, as most answers: what addUsage adds, its
		// other terms being zero.
		c.add(u.InputTokens, p.Input)
		c.add(u.OutputTokens, p.Output)
	} else {
		c.addUsage(p, u)
	}
	m := c.money(false)
	if p.Request == 0 { // most prices: no fee per request
		return m
	}
	return m + min(p.Request, maxMoney-m) // saturating, as costSum does
}

// addUsage adds the cost of u's tokens at p, each kind at its price.
func (c *costSum) addUsage(p *Price, u *Usage) {
	text := u.InputTokens - u.CachedInputTokens - u.CacheWriteInputTokens
	// The audio and image tokens that do not fit in the text were cached
	// (or written): they lose the cache discount, not their own price.
	media := u.AudioInputTokens + u.ImageInputTokens // each at most maxUsageTokens when read from an answer
	overlap := media - max(text, 0)
	c.add(text-media, p.Input)
	c.add(u.CachedInputTokens-max(overlap, 0), p.cachedInput())
	if both := min(overlap, u.CachedInputTokens); both > 0 {
		// Cached media: priced as media below, and at least as cached
		// input, when the table prices that higher.
		cheapest := p.imageInput()
		if u.AudioInputTokens > 0 && (u.ImageInputTokens <= 0 || p.audioInput() < cheapest) {
			cheapest = p.audioInput()
		}
		c.add(both, p.cachedInput()-cheapest) // nothing when not positive
	}
	c.add(u.CacheWriteInputTokens-u.CacheWrite1hInputTokens, p.cacheWrite())
	c.add(u.CacheWrite1hInputTokens, p.cacheWrite1h())
	c.add(u.AudioInputTokens, p.audioInput())
	c.add(u.ImageInputTokens, p.imageInput())
	c.add(u.OutputTokens-u.AudioOutputTokens-u.ImageOutputTokens, p.Output)
	c.add(u.AudioOutputTokens, p.audioOutput())
	c.add(u.ImageOutputTokens, p.imageOutput())
}
