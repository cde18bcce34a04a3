package httpguard

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"slices"
	"strconv"
	"strings"
)

// The Images API (/images/generations, /images/edits, /images/variations)
// takes no max_tokens: what bounds an image's output tokens is its model,
// quality and size, which OpenAI's image generation guide tabulates. These
// are read from the body only on those endpoints, so the chat path does
// not pay for them.

// The qualities and the sizes of the GPT image models with a table, which
// index imageTokenTable.
const (
	imageLow = iota
	imageMedium
	imageHigh
	imageQualities
)

const (
	imageSquare    = iota // 1024x1024
	imagePortrait         // 1024x1536
	imageLandscape        // 1536x1024
	imageSizes
)

// imageTokenTable is the output tokens of one image, by quality and size.
type imageTokenTable [imageQualities][imageSizes]int64

// gptImage1Tokens are gpt-image-1's image output tokens per image, from
// OpenAI's image generation guide ("Cost and latency"). gpt-image-1.5 bills
// the same counts: its per-image prices ($0.009, $0.013, $0.013; $0.034,
// $0.051, $0.050; $0.133, $0.200, $0.199) are these at its $32 per million,
// as gpt-image-1's are at $40.
var gptImage1Tokens = imageTokenTable{
	imageLow:    {272, 408, 400},
	imageMedium: {1056, 1584, 1568},
	imageHigh:   {4160, 6240, 6208},
}

// gptImage1MiniTokens bound gpt-image-1-mini's image output tokens, which
// OpenAI does not tabulate: each is the most tokens whose cost at its $8
// per million image output tokens rounds to its per-image price ($0.005,
// $0.006, $0.006; $0.011, $0.015, $0.015; $0.036, $0.052, $0.052), as
// gpt-image-1's counts round to its prices: $0.0055 is 687.5 tokens.
var gptImage1MiniTokens = imageTokenTable{
	imageLow:    {687, 812, 812},
	imageMedium: {1437, 1937, 1937},
	imageHigh:   {4562, 6562, 6562},
}

// partialImageTokens is what each partial image of a stream
// (partial_images) adds to an image's output tokens, as the guide says.
const partialImageTokens = 100

// maxPartialImages bounds partial_images as counted: OpenAI takes 0 to 3;
// a value that reads otherwise (a string, a fraction) is counted as this.
const maxPartialImages = 10

// untabledImageTokens is what one image of a model the tables above do
// not hold reserves by default (OutputReserve when that is more; see
// BudgetConfig.ImageReserve). Later
// models take any size up to 3840×2160 and qualities above high
// (gpt-image-2.5's xhigh and max), and their guide gives no table: the
// dearest image priced by late 2026, gpt-image-2.5 at max quality and
// 3840×2160, is about $0.40 at $30 per million image output tokens, some
// 13,400 tokens; this is above it, with room for text output tokens. Too
// much for a cheap model rather than too little for a dear one: the
// reservation is a worst case.
const untabledImageTokens = 16_384

// imageRequest is what an Images API body says of its output: the
// qualities and sizes it may be read as asking for (bit sets, every bit
// when absent, auto or unknown), and its partial images.
type imageRequest struct {
	qualities, sizes uint8
	partials         int64
	// choices is the most images a fallback entry asks for (its n), 0
	// when none does.
	choices int64
}

// readImageRequest reads body, a JSON object, as servers may: every
// member whose key folds to a field's name (encoding/json matches keys so),
// each value counted, so that duplicates and other spellings read as the
// dearest of their readings, with the package's one JSON reader. The
// members of a fallback given as an object, and of extra_body, count too:
// LiteLLM runs them over the request's (its Router's kwargs.update, the
// body it sends).
// A body that is not exactly one valid JSON object asks for the worst
// case.
func readImageRequest(body []byte) imageRequest {
	var f imageFields
	err := jsonMembers(body, func(raw []byte, escaped bool, v []byte) error {
		key := raw
		if escaped {
			key = appendUnquoted(nil, raw)
		}
		f.read(string(key), v, true)
		switch {
		case fallbackKey(string(key)):
			f.readFallbacks(v)
		case string(key) == requestFieldNames[reqExtraBody]:
			f.readMerged(v)
		}
		return nil
	})
	if err != nil {
		return worstImageRequest
	}
	return f.request()
}

// worstImageRequest asks for every quality and size, with the most
// partial images.
var worstImageRequest = imageRequest{qualities: 1<<imageQualities - 1, sizes: 1<<imageSizes - 1, partials: maxPartialImages}

// imageFields gathers the fields of an Images API request as they are
// read, a JSON value each.
type imageFields struct {
	qualities, sizes      uint8
	seenQuality, seenSize bool
	partials              int64
	choices               int64 // as imageRequest's
}

// fallbackKey reports whether key names a field whose entries name
// fallback models (see fallbackFields): the request reader refused it in
// another case.
func fallbackKey(key string) bool {
	for _, f := range fallbackFields {
		if key == requestFieldNames[f] {
			return true
		}
	}
	return false
}

// readFallbacks reads the objects of v, a fallback field's value (see
// readMerged).
func (f *imageFields) readFallbacks(v []byte) {
	for e := range validElements(v) {
		f.readMerged(e)
	}
}

// readMerged reads the members of v, an object that LiteLLM merges over
// the request for some run (a fallback entry, extra_body), as the
// request's own, but for saying that a field is given (the request
// without it leaves it out): its quality or size adds its reading, and its
// n, read as requestCount reads a count (or maxImagesN when it does not
// read as one), is its images.
func (f *imageFields) readMerged(v []byte) {
	for raw, ev := range validMembers(v) {
		key := raw
		if bytes.IndexByte(raw, '\\') >= 0 {
			key = appendUnquoted(nil, raw)
		}
		f.read(string(key), ev, false)
		if strings.EqualFold(string(key), "n") {
			n, err := requestCount(reqN, ev)
			if err != nil {
				n = maxImagesN
			}
			f.choices = max(f.choices, n)
		}
	}
}

// read reads a member whose key is key and whose value is the JSON v;
// plain says every server reads it as that member (see formPartNames).
func (f *imageFields) read(key string, v []byte, plain bool) {
	// A key in another case adds its reading, but only the key itself,
	// read alike by every server, says the field is given: to a server
	// that matches keys exactly, the other spelling leaves it out, and
	// auto.
	switch {
	case strings.EqualFold(key, "quality"):
		f.seenQuality = f.seenQuality || plain && key == "quality"
		f.qualities |= imageQualityOf(v)
	case strings.EqualFold(key, "size"):
		f.seenSize = f.seenSize || plain && key == "size"
		f.sizes |= imageSizeOf(v)
	case strings.EqualFold(key, "partial_images"):
		f.partials = max(f.partials, partialImagesOf(v))
	}
}

// request is what the fields read ask for: every quality or size when
// none was given.
func (f *imageFields) request() imageRequest {
	r := imageRequest{qualities: worstImageRequest.qualities, sizes: worstImageRequest.sizes, partials: f.partials, choices: f.choices}
	if f.seenQuality {
		r.qualities = f.qualities
	}
	if f.seenSize {
		r.sizes = f.sizes
	}
	return r
}

// imageQualityOf is the quality a value asks for: auto, null and any
// other value may be any quality (a GPT image model picks one for auto).
func imageQualityOf(v []byte) uint8 {
	switch string(v) {
	case `"low"`:
		return 1 << imageLow
	case `"medium"`:
		return 1 << imageMedium
	case `"high"`:
		return 1 << imageHigh
	}
	return 1<<imageQualities - 1
}

// imageSizeOf is imageQualityOf for size.
func imageSizeOf(v []byte) uint8 {
	switch string(v) {
	case `"1024x1024"`:
		return 1 << imageSquare
	case `"1024x1536"`:
		return 1 << imagePortrait
	case `"1536x1024"`:
		return 1 << imageLandscape
	}
	return 1<<imageSizes - 1
}

// partialImagesOf is how many partial images a value asks for: null is
// none, an integer itself (within maxPartialImages), anything else
// maxPartialImages.
func partialImagesOf(v []byte) int64 {
	if string(v) == "null" {
		return 0
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n > maxPartialImages {
		return maxPartialImages
	}
	return max(n, 0)
}

// imageTable returns the table of model's image output tokens, nil for a
// model without one; text says the model may also write text output
// tokens. The name is read in any case, with OpenAI's prefix (openai/, as
// LiteLLM and OpenRouter name its models) and a dated snapshot; other
// prefixes name deployments that may run any model (LiteLLM's azure/…),
// and other names, gpt-image-1-mini's included, are not gpt-image-1's.
func imageTable(model string) (t *imageTokenTable, text bool) {
	model = strings.ToLower(model)
	model = strings.TrimPrefix(model, "openai/")
	for _, m := range []struct {
		name  string
		table *imageTokenTable
		text  bool
	}{
		{"gpt-image-1", &gptImage1Tokens, false},
		// gpt-image-1.5 may write text output tokens too (its price
		// lists them, $10 per million), which no field bounds.
		{"gpt-image-1.5", &gptImage1Tokens, true},
		{"gpt-image-1-mini", &gptImage1MiniTokens, false},
	} {
		if model == m.name || snapshotOf(model, m.name) {
			return m.table, m.text
		}
	}
	return nil, false
}

// snapshotOf reports whether model is a dated snapshot of name:
// name-YYYY-MM-DD.
func snapshotOf(model, name string) bool {
	date, ok := strings.CutPrefix(model, name+"-")
	if !ok || len(date) != len("2006-01-02") {
		return false
	}
	for i := range len(date) {
		if c := date[i]; i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// imageOutputTokens is the bound on one image's output tokens for a
// request r to model, with outputReserve and imageReserve the Budget's
// OutputReserve and ImageReserve: the dearest entry of the model's table
// among the qualities and sizes r may be read as, plus outputReserve for
// a model that also writes text; for a model without a table,
// imageReserve; and its partial images.
func imageOutputTokens(model string, r imageRequest, outputReserve, imageReserve int64) int64 {
	partials := r.partials * partialImageTokens
	t, text := imageTable(model)
	if t == nil {
		return addTokens(imageReserve, partials)
	}
	var n int64
	for q := range imageQualities {
		for s := range imageSizes {
			if r.qualities>>q&1 != 0 && r.sizes>>s&1 != 0 {
				n = max(n, t[q][s])
			}
		}
	}
	n += partials
	if text {
		n = addTokens(n, outputReserve)
	}
	return n
}

// maxImagesN is the n an Images API form is read as asking for when its n
// does not read as an integer: OpenAI takes 1 to 10.
const maxImagesN = 10

// parseImageForm reads an Images API request sent as multipart/form-data
// (an edit, as the SDKs send images.edit), its parts cut at boundary, into
// cr, a zero chatRequest: its model (which must read one way only, see
// formModel), n, stream, and its prompt's bound: a token a byte of its
// fields, and openAIImageTokenAllowance for each file it uploads (an
// image or a mask) in place of its bytes. It returns what the form asks
// of its output. Fields are matched in any case, each value counted (the
// dearest of their readings), and a value with a Content-Transfer-Encoding
// reads as unknown: the worst case.
func parseImageForm(body []byte, boundary string, cr *chatRequest) (imageRequest, error) {
	_, model, err := formModel(body, multipartForm, boundary)
	if err != nil {
		return imageRequest{}, fmt.Errorf("a multipart form that servers may read differently: %w", err)
	}
	// formModel took the body: cut one way, every part read alike.
	parts, _ := splitMultipart(body, boundary)
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	*cr = chatRequest{Model: model, Choices: 1}
	var f imageFields
	text, files := int64(len(body)), int64(0)
	for _, span := range parts {
		rp, err := mr.NextRawPart()
		if err != nil {
			return imageRequest{}, fmt.Errorf("a multipart form that servers may read differently: %w", ErrModelUnreadable)
		}
		content := body[span[0]:span[1]]
		names, file, field, plain := formPartNames(rp.Header)
		if file {
			text -= int64(len(content))
			files++
		}
		if !field || file && !slices.ContainsFunc(names, imageFormField) {
			rp.Close()
			continue // an image's bytes are not copied to be read as no field
		}
		value := string(content)
		if len(rp.Header.Values("Content-Transfer-Encoding")) > 0 {
			value, plain = "\x00", false // read otherwise by some: unknown
		}
		for _, name := range names {
			switch {
			case strings.EqualFold(name, "n"):
				cr.Choices = max(cr.Choices, formCount(value))
			case strings.EqualFold(name, "partial_images"):
				f.partials = max(f.partials, formPartials(value))
			case strings.EqualFold(name, "stream"):
				cr.Stream = cr.Stream || !strings.EqualFold(strings.TrimSpace(value), "false")
			default:
				f.read(name, quoteJSON(value), plain)
			}
		}
		rp.Close()
	}
	cr.PromptTokens = addTokens(text, min(files, maxUsageTokens/openAIImageTokenAllowance)*openAIImageTokenAllowance)
	return f.request(), nil
}

// formPartNames returns the field names a part's Content-Dispositions
// give it, whether it is a file: a disposition with a filename, or named
// image, image[] or mask (an image sent without a filename is still one to
// a lenient server), whether it may be read as a value: a filename absent
// or empty (Go's reader reads filename="" as a value, Python's as a file),
// and whether every server reads it as its one field: one disposition, of
// type form-data (Go's servers skip other types, Python's read them),
// without a filename.
func formPartNames(h map[string][]string) (names []string, file, field, plain bool) {
	ds := h["Content-Disposition"]
	for _, d := range ds {
		typ, params, err := mime.ParseMediaType(d)
		filename, named := params["filename"]
		plain = len(ds) == 1 && err == nil && typ == "form-data" && !named
		if err != nil {
			continue // formModel refused the form if such a part may be the model's
		}
		name := params["name"]
		if named || strings.HasPrefix(strings.ToLower(name), "image") || strings.EqualFold(name, "mask") {
			file = true
		}
		field = field || filename == ""
		names = append(names, name)
	}
	return names, file, field, plain
}

// imageFormField reports whether name is one of the fields parseImageForm
// reads, in any case.
func imageFormField(name string) bool {
	for _, f := range [...]string{"n", "partial_images", "stream", "quality", "size"} {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// formCount reads a form's n: an integer, at least 1 and at most
// maxUsageTokens (as a JSON body's n reads, see ceilNumber), or maxImagesN
// when it does not read as one. An integer too long for an int64 reads as
// the most, as Python's int() reads it large. Digits grouped by
// underscores ("2_0") read as Python's int() reads them, which reads
// OpenAI's and LiteLLM's forms.
func formCount(v string) int64 {
	v = strings.TrimSpace(v)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		if digits, ok := ungroupDigits(v); ok {
			n, err = strconv.ParseInt(digits, 10, 64)
		}
	}
	if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range, n is ±MaxInt64
		return maxImagesN
	}
	return min(max(n, 1), maxUsageTokens)
}

// ungroupDigits returns v without its underscores, and whether it has any
// and each stands between two digits, as in Python's "1_000".
func ungroupDigits(v string) (string, bool) {
	if !strings.Contains(v, "_") {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] == '_' && (i == 0 || i == len(v)-1 || !digit(v[i-1]) || !digit(v[i+1])) {
			return "", false
		}
	}
	return strings.ReplaceAll(v, "_", ""), true
}

func digit(c byte) bool { return '0' <= c && c <= '9' }

// formPartials reads a form's partial_images: an integer, within
// maxPartialImages, or maxPartialImages when it does not read as one.
func formPartials(v string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return maxPartialImages
	}
	return min(max(n, 0), maxPartialImages)
}
