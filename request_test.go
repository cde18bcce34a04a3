package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parsed is parseChatRequest's answer without the prompt bounds.
func parsed(t *testing.T, body string) chatRequest {
	t.Helper()
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err, body)
	cr.PromptTokens, cr.EstimatedPromptTokens = 0, 0
	return cr
}

func TestParseChatRequestReadsOpenAIAndAnthropicFields(t *testing.T) {
	tests := []struct {
		name string
		body string
		want chatRequest
	}{
		{"openai max_tokens", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`,
			chatRequest{Model: "gpt-4.1", MaxOutput: 100, Choices: 1}},
		{"openai max_completion_tokens", `{"model":"o3","max_completion_tokens":2048,"messages":[]}`,
			chatRequest{Model: "o3", MaxOutput: 2048, Choices: 1}},
		{"responses max_output_tokens", `{"model":"gpt-4.1","input":"hi","max_output_tokens":7}`,
			chatRequest{Model: "gpt-4.1", MaxOutput: 7, Choices: 1}},
		{"stream with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			chatRequest{Model: "m", Stream: true, IncludeUsage: true, Choices: 1}},
		{"stream without usage", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			chatRequest{Model: "m", Stream: true, Choices: 1}},
		{"n choices", `{"model":"m","n":3,"max_tokens":10}`,
			chatRequest{Model: "m", MaxOutput: 10, Choices: 3}},
		{"best_of candidates", `{"model":"gpt-3.5-turbo-instruct","prompt":"x","best_of":5,"n":2,"max_tokens":10}`,
			chatRequest{Model: "gpt-3.5-turbo-instruct", MaxOutput: 10, Choices: 5}},
		{"fraction rounds up", `{"model":"m","max_tokens":10.2}`,
			chatRequest{Model: "m", MaxOutput: 11, Choices: 1}},
		{"exponent", `{"model":"m","max_tokens":1.5e3,"n":2e0}`,
			chatRequest{Model: "m", MaxOutput: 1500, Choices: 2}},
		{"negative is absent", `{"model":"m","max_tokens":-5}`,
			chatRequest{Model: "m", Choices: 1}},
		{"absurd is clamped", `{"model":"m","max_tokens":1e300,"n":12345678901234567890}`,
			chatRequest{Model: "m", MaxOutput: maxUsageTokens, Choices: maxUsageTokens}},
		{"beyond float64 is clamped too", `{"model":"m","max_tokens":1e400}`,
			chatRequest{Model: "m", MaxOutput: maxUsageTokens, Choices: 1}},
		{"anthropic", `{"model":"claude-sonnet-4-5","system":"be brief","max_tokens":1024,"stream":true,"messages":[]}`,
			chatRequest{Model: "claude-sonnet-4-5", Stream: true, MaxOutput: 1024, Choices: 1}},
		{"duplicate keys: the last wins", `{"model":"m","stream":false,"max_tokens":10,"stream":true}`,
			chatRequest{Model: "m", Stream: true, MaxOutput: 10, Choices: 1}},
		{"escaped keys", `{"\u006dodel":"m","max\u005ftokens":9,"\u0073tream":true}`,
			chatRequest{Model: "m", Stream: true, MaxOutput: 9, Choices: 1}},
		{"escaped model", `{"model":"gpt-4\u002e1\ud83d\ude00"}`,
			chatRequest{Model: "gpt-4.1😀", Choices: 1}},
		{"null is absent", `{"model":null,"max_tokens":null,"n":null,"stream":null,"stream_options":null}`,
			chatRequest{Choices: 1}},
		{"keys of nested objects do not count", `{"model":"m","messages":[{"max_tokens":99,"MAX_TOKENS":5}]}`,
			chatRequest{Model: "m", Choices: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, parsed(t, tt.body))
		})
	}
}

func TestParseChatRequestRejectsBodiesThatAreNotJSONObjects(t *testing.T) {
	for _, body := range []string{``, `not json`, `[1,2]`, `null`, `"s"`, `{"model":"m"`, `{"model":"m"}x`, `{"model":"m","max_tokens":01}`, "{\"model\":\"\x01\"}"} {
		_, err := parseChatRequest([]byte(body))
		assert.ErrorIs(t, err, errJSONSyntax, body)
	}
}

func TestParseChatRequestRefusesBodiesServersReadDifferently(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","MAX_TOKENS":100000}`,                 // encoding/json reads it, Python servers ignore it
		`{"model":"m","max_tokens":10,"Max_Tokens":100000}`, // two spellings
		`{"model":"m","max_to\u212aens":100000}`,            // Kelvin sign: encoding/json folds it to k
		"{\"model\":\"m\",\"max_to\u212aens\":100000}",      // the same, not escaped
		`{"Model":"m"}`,       // a model only Go relays see
		`{"model":"m","N":5}`, //
		`{"model":"m","stream":true,"Stream_Options":{}}`,                           //
		`{"model":"m","stream_options":{"INCLUDE_USAGE":true}}`,                     //
		`{"model":"m","max_tokens":100000,"max_tokens":null}`,                       // encoding/json keeps 100000, Python takes null
		`{"model":"m","stream":true,"stream":null}`,                                 //
		`{"model":"m","max_tokens":"100000"}`,                                       // pydantic reads it, Go refuses it
		`{"model":"m","n":true}`,                                                    //
		`{"model":"m","stream":"true"}`,                                             //
		`{"model":5}`,                                                               //
		`{"model":"m","stream_options":[]}`,                                         //
		`{"model":"m","stream_options":{"include_usage":"yes"}}`,                    //
		`{"model":"m","stream_options":{"include_usage":true},"stream_options":{}}`, // merged: true; replaced: false
	} {
		_, err := parseChatRequest([]byte(body))
		assert.ErrorIs(t, err, errAmbiguousRequest, body)
	}
}

func TestParseChatRequestAmbiguityErrorNamesTheField(t *testing.T) {
	_, err := parseChatRequest([]byte(`{"model":"m","MAX_TOKENS":100000}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"MAX_TOKENS"`)
	assert.Contains(t, err.Error(), `"max_tokens"`)
	assert.NotContains(t, err.Error(), "httpguard:", "the layer adds the prefix")
}

func TestParseChatRequestPromptBoundIsAtLeastTheBodyLength(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"héllo wörld, 你好"}]}`
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	assert.Equal(t, int64(len(body)), cr.PromptTokens)
}

func TestParseChatRequestAddsAllowancesForImagesAndTools(t *testing.T) {
	body := `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/i.png"}}]}]}`
	cr, err := parseChatRequest([]byte(body))
	require.NoError(t, err)
	assert.Equal(t, int64(len(body))+2*openAIImageTokenAllowance+toolsTokenAllowance, cr.PromptTokens)
}

func TestParseChatRequestCountsImagesWhateverTheirSpelling(t *testing.T) {
	for body, images := range map[string]int64{
		`{"model":"m","input":[{"type":"input_image","file_id":"f"}]}`:                           2 * openAIImageTokenAllowance,
		`{"model":"m","input":[{"type":"input\u005fimage","file_i\u0064":"f"}]}`:                 2 * openAIImageTokenAllowance,
		`{"model":"m","input":[{"type":"input_file","FILE_ID":"f"}]}`:                            openAIImageTokenAllowance,
		`{"model":"m","messages":[{"content":[{"type":"\u0069mage_url","\u0069mage_url":{}}]}]}`: 2 * openAIImageTokenAllowance,
		`{"model":"m","messages":[{"content":[{"TYPE":"IMAGE_URL","Image_Url":{}}]}]}`:           2 * openAIImageTokenAllowance,
		`{"model":"m","messages":[{"content":[{"type":"image","source":{"type":"url"}}]}]}`:      imageTokenAllowance,
		`{"model":"m","messages":[{"content":"an \"image\" in text is not an image"}]}`:          0,
		`{"model":"m","input":[{"type":"x_imag\u0065","Type":"X_IMAG\u0045"}]}`:                  2 * imageTokenAllowance,
		`{"model":"m","input":[{"type":"image\u005furl","TYPE":"Image\n"}]}`:                     openAIImageTokenAllowance + imageTokenAllowance,
		`{"model":"m","input":[{"type":"x\u005fimage","TYPE":"X\u005fIMAGE"}]}`:                  2 * imageTokenAllowance,
		`{"model":"m","input":[{"type":"\u0049MAGE\n"}]}`:                                        imageTokenAllowance,
		`{"model":"m","input":[{"arguments":"{\"image\":\"x\"}"}]}`:                              0,
	} {
		cr, err := parseChatRequest([]byte(body))
		require.NoError(t, err, body)
		assert.Equal(t, int64(len(body))+images, cr.PromptTokens, body)
	}
}

// A value nested deeper than scanValue goes is lexed instead: its strings
// count once.
func TestParseChatRequestCountsImagesNestedDeepOnce(t *testing.T) {
	for _, depth := range []int{63, 64, 65, 100} {
		body := `{"model":"m","messages":[{"type":"image_url"},` + strings.Repeat(`[`, depth) + `"x"` + strings.Repeat(`]`, depth) + `]}`
		cr, err := parseChatRequest([]byte(body))
		require.NoError(t, err)
		assert.Equal(t, int64(len(body))+openAIImageTokenAllowance, cr.PromptTokens, "nested %d deep", depth)
	}
}

func TestParseChatRequestEstimatesAQuarterOfTheContentBytes(t *testing.T) {
	messages := `[{"role":"user","content":"` + strings.Repeat("a", 400) + `"}]`
	cr, err := parseChatRequest([]byte(`{"model":"m","max_tokens":5,"messages":` + messages + `}`))
	require.NoError(t, err)
	assert.Equal(t, int64(len(messages)/4), cr.EstimatedPromptTokens)

	cr, err = parseChatRequest([]byte(`{"model":"m"}`))
	require.NoError(t, err)
	assert.Equal(t, int64(1), cr.EstimatedPromptTokens)
}

func TestCeilNumberRoundsEveryJSONNumberFormUp(t *testing.T) {
	for v, want := range map[string]int64{
		"0": 0, "0.0": 0, "0e9": 0, "1": 1, "10": 10, "0.5": 1, "0.0001": 1, "1.0": 1, "1.01": 2, "1e3": 1000, "1E+3": 1000,
		"15e-1": 2, "100e-2": 1, "0.5e1": 5, "0.51e1": 6, "999999999.1": maxUsageTokens, "1000000000": maxUsageTokens,
		"9999999999": maxUsageTokens, "12345678901": maxUsageTokens, "1e99999999999999": maxUsageTokens,
		"1e-99999999999999": 1, "00.5": 1, "4096": 4096, "4096.000": 4096, "40.96e2": 4096,
	} {
		assert.Equal(t, want, ceilNumber([]byte(v)), v)
	}
}

// requestReading is what a server reads of a request: what prices it.
type requestReading struct {
	Model        string
	Stream       bool
	IncludeUsage bool
	MaxOutput    int64
	Choices      int64
}

func ceilCount(f float64) int64 {
	if !(f > 0) {
		return 0
	}
	return int64(math.Ceil(math.Min(f, maxUsageTokens)))
}

// goReading reads a request as a Go relay does, with encoding/json:
// case-insensitive keys, the last value wins, null changes nothing,
// repeated objects merge, a count must be a number.
func goReading(body []byte) (requestReading, bool) {
	var v struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		MaxTokens           float64         `json:"max_tokens"`
		MaxCompletionTokens float64         `json:"max_completion_tokens"`
		MaxOutputTokens     float64         `json:"max_output_tokens"`
		N                   float64         `json:"n"`
		BestOf              float64         `json:"best_of"`
		Prompt              json.RawMessage `json:"prompt"`
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' || json.Unmarshal(body, &v) != nil {
		return requestReading{}, false
	}
	return requestReading{
		Model: v.Model, Stream: v.Stream, IncludeUsage: v.StreamOptions.IncludeUsage,
		MaxOutput: max(ceilCount(v.MaxTokens), ceilCount(v.MaxCompletionTokens), ceilCount(v.MaxOutputTokens)),
		Choices:   batchChoices(max(1, ceilCount(v.N), ceilCount(v.BestOf)), v.Prompt),
	}, true
}

// batchChoices is the candidates a server generates for choices per prompt
// and a prompt value: an array holding a string, array or object is a batch,
// each of its elements a prompt.
func batchChoices(choices int64, prompt json.RawMessage) int64 {
	var batch []json.RawMessage
	if json.Unmarshal(prompt, &batch) != nil {
		return choices
	}
	for _, e := range batch {
		if e[0] == '"' || e[0] == '[' || e[0] == '{' {
			return min(choices*int64(len(batch)), maxUsageTokens)
		}
	}
	return choices
}

// exactReading reads a request as a Python server does: exact keys, the
// last value wins, null included; a count may be a string holding a
// number.
func exactReading(body []byte) (requestReading, bool) {
	var m map[string]json.RawMessage
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' || json.Unmarshal(body, &m) != nil {
		return requestReading{}, false
	}
	var r requestReading
	if v, ok := m["model"]; ok && json.Unmarshal(v, &r.Model) != nil {
		return r, false
	}
	boolean := func(v json.RawMessage, dst *bool) bool { return v == nil || json.Unmarshal(v, dst) == nil }
	count := func(v json.RawMessage) (int64, bool) {
		var f float64
		if v == nil || string(v) == "null" || json.Unmarshal(v, &f) == nil {
			return ceilCount(f), true
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return 0, false
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		return ceilCount(f), err == nil
	}
	if !boolean(m["stream"], &r.Stream) {
		return r, false
	}
	if v := m["stream_options"]; v != nil && string(v) != "null" {
		var opts map[string]json.RawMessage
		if json.Unmarshal(v, &opts) != nil || !boolean(opts["include_usage"], &r.IncludeUsage) {
			return r, false
		}
	}
	var counts [5]int64
	for i, k := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of"} {
		var ok bool
		if counts[i], ok = count(m[k]); !ok {
			return r, false
		}
	}
	r.MaxOutput, r.Choices = max(counts[0], counts[1], counts[2]), batchChoices(max(1, counts[3], counts[4]), m["prompt"])
	return r, true
}

// outputs is the output a reservation covers, for a default of d when the
// request sets no maximum.
func (r requestReading) outputs(d int64) int64 {
	out := r.MaxOutput
	if out == 0 {
		out = d
	}
	return out * r.Choices
}

// cleanRequest reports whether no server could read body differently: no
// field read here in another case, no null after a value, no repeated
// field of onceBits, no repeated tools nor a tool's type or count (max_uses, max_content_tokens) that
// readTool may refuse, counts
// that are numbers.
func cleanRequest(body []byte) bool {
	var names []string
	for _, n := range requestFieldNames {
		names = append(names, n)
	}
	if hasFoldedKey(body, append(names, "include_usage")...) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return false
	}
	nonNull, seen := map[string]bool{}, map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return false
		}
		key := k.(string)
		if i := slices.Index(requestFieldNames[:], key); seen[key] && i >= 0 && onceBits>>i&1 == 1 {
			return false // a field whose value prices the request, repeated: some servers keep the first
		}
		if key == "tools" && (seen[key] || hasFoldedKey(v, "type", "max_uses", "max_content_tokens") ||
			bytes.Contains(v, []byte(`"max_uses"`)) || bytes.Contains(v, []byte(`"max_content_tokens"`))) {
			// encoding/json merges a repeated array's elements; a tool's
			// type or counts may be read differently (see readTool).
			return false
		}
		seen[key] = true
		if string(v) == "null" && nonNull[key] {
			return false
		}
		nonNull[key] = nonNull[key] || string(v) != "null"
		var modalities []string
		if key == "modalities" && json.Unmarshal(v, &modalities) != nil {
			return false // not an array of strings: servers refuse it, as the parser does
		}
		if key == "stream_options" && bytes.Contains(v, []byte(`null`)) {
			return false
		}
	}
	return true
}

func TestParseChatRequestIsNeverBelowWhatAServerReads(t *testing.T) {
	g := newJSONGen(8)
	accepted := 0
	for range 5000 {
		body := g.doc()
		checkRequestAgainstEncodingJSON(t, body)
		if _, err := parseChatRequest(body); err == nil {
			accepted++
		}
	}
	assert.Greater(t, accepted, 500, "the generator should make bodies the parser accepts")
}

// checkRequestAgainstEncodingJSON checks parseChatRequest against the
// readings encoding/json gives of body.
func checkRequestAgainstEncodingJSON(t *testing.T, body []byte) {
	cr, err := parseChatRequest(body)
	goR, goOK := goReading(body)
	exR, exOK := exactReading(body)
	if !json.Valid(body) || !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
		if err == nil {
			t.Fatalf("parseChatRequest(%q) accepted a body that is not a JSON object", body)
		}
		return
	}
	if err != nil {
		if goOK && exOK && goR == exR && cleanRequest(body) {
			t.Fatalf("parseChatRequest(%q): %v; both decoders read %+v", body, err, goR)
		}
		return
	}
	if stored := referenceStoredInput(body); cr.StoredInput != stored {
		t.Fatalf("parseChatRequest(%q).StoredInput = %v, encoding/json reads %v", body, cr.StoredInput, stored)
	}
	ours := requestReading{cr.Model, cr.Stream, cr.IncludeUsage, cr.MaxOutput, cr.Choices}
	for _, r := range []struct {
		ok   bool
		read requestReading
	}{{goOK, goR}, {exOK, exR}} {
		if !r.ok {
			continue
		}
		for _, d := range []int64{1, 1000, maxUsageTokens} {
			if ours.outputs(d) < r.read.outputs(d) {
				t.Fatalf("parseChatRequest(%q) = %+v, below a server's reading %+v", body, ours, r.read)
			}
		}
		if r.read.Model != ours.Model || r.read.Stream != ours.Stream {
			t.Fatalf("parseChatRequest(%q) = %+v, a server reads %+v", body, ours, r.read)
		}
	}
	if goOK && exOK && goR == exR && ours != goR {
		t.Fatalf("parseChatRequest(%q) = %+v, both decoders read %+v", body, ours, goR)
	}
}

// referenceStoredInput reads, with encoding/json, whether a request body
// (one parseChatRequest accepts) continues input the provider stored: a
// previous_response_id, a conversation, a prompt object, or an item of the
// last input that references one (see inputItems).
func referenceStoredInput(body []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	nonNull := func(k string) bool { return m[k] != nil && string(m[k]) != "null" }
	if nonNull("previous_response_id") || nonNull("conversation") || bytes.HasPrefix(m["prompt"], []byte("{")) {
		return true
	}
	var items []json.RawMessage
	if json.Unmarshal(m["input"], &items) != nil {
		return false
	}
	for _, item := range items {
		dec := json.NewDecoder(bytes.NewReader(item))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			continue // not an object
		}
		typed, role, id := false, false, false
		for dec.More() { // every member, repeated keys included
			tok, _ := dec.Token()
			var v json.RawMessage
			dec.Decode(&v)
			k := tok.(string)
			var s string
			switch {
			case string(v) == "null":
			case strings.EqualFold(k, "type"):
				if json.Unmarshal(v, &s) == nil && strings.EqualFold(s, "item_reference") {
					return true
				}
				typed = typed || k == "type"
			case k == "role":
				role = true
			case strings.EqualFold(k, "id"):
				id = true
			}
		}
		if id && !typed && !role {
			return true
		}
	}
	return false
}

// inputRequest writes a Responses request whose input holds items made of
// the keys that tell a reference apart, in every spelling, with values of
// every kind, objects nested in them among them; the input sometimes
// repeats, or is not an array.
func (g *jsonGen) inputRequest() []byte {
	keys := g.keys
	g.keys = []string{"type", "Type", "role", "Role", "id", "ID", "content"}
	defer func() { g.keys = keys }()
	var b bytes.Buffer
	b.WriteString(`{"model":"m"`)
	for range 1 + g.r.IntN(2) {
		b.WriteByte(',')
		g.space(&b)
		b.WriteString(`"input":`)
		g.space(&b)
		switch g.r.IntN(8) {
		case 0:
			g.value(&b, 3)
		case 1:
			g.item(&b, 2)
		default:
			g.array(&b, g.r.IntN(4), func(b *bytes.Buffer) {
				if g.r.IntN(8) == 0 {
					g.value(b, 2)
				} else {
					g.item(b, 2)
				}
			})
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// item writes an input item of keys from g.keys.
func (g *jsonGen) item(b *bytes.Buffer, depth int) {
	var members []string
	for range g.r.IntN(4) {
		var m bytes.Buffer
		g.key(&m)
		m.WriteByte(':')
		g.space(&m)
		switch k := g.r.IntN(8); {
		case k < 2:
			g.string(&m, []string{"item_reference", "ITEM_Reference", "message", "function_call"}[g.r.IntN(4)])
		case k == 2:
			m.WriteString(`"item_\u0072eference"`)
		case k == 3:
			m.WriteString("null")
		case k == 4 && depth > 0: // an object whose keys are no item's
			g.item(&m, depth-1)
		default:
			g.value(&m, depth)
		}
		g.space(&m)
		members = append(members, m.String())
	}
	b.WriteString("{" + strings.Join(members, ",") + "}")
}

// scanInput, readWhole's reader of a Responses input, counts the images
// named anywhere in it as the lexer does: in an item's keys and string
// values, in the content nested in an item, and in elements that are not
// items; escaped or not.
func TestScanInputCountsImagesWhereverTheInputNamesThem(t *testing.T) {
	for _, input := range []string{
		`[{"role":"user","content":[{"type":"input_text","text":"what is this?"},{"type":"input_image","image_url":"https://x/a.png"}]}]`,
		`[{"type":"message","role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]`,
		`[{"role":"user","content":"hi"},"input_image"]`,
		`[{"role":"user","content":"hi"},["image_url",{"url":"https://x/a.png"}]]`,
		`[{"type":"input_image","image_url":"https://x/a.png"}]`,
		`[{"type":"message","IMAGE_URL":{"url":"https://x/a.png"}}]`,
		`[{"type":"message","content":[{"type":"input_\u0069mage"}]}]`,
	} {
		body := []byte(`{"model":"gpt-5","input":` + input + `}`)
		var whole requestReader
		done, err := whole.readWhole(body)
		require.True(t, done, input)
		require.NoError(t, err, input)
		assert.Positive(t, whole.images, input)
		require.True(t, checkReadWhole(t, body), input)
	}
}

// An input item referencing a stored item is found as encoding/json reads
// it, whatever its keys' spellings, values and order, and whatever objects
// nest in the items.
func TestParseChatRequestFindsItemReferencesAsEncodingJSONReadsThem(t *testing.T) {
	g := newJSONGen(41)
	accepted, refs := 0, 0
	for range 5000 {
		body := g.inputRequest()
		require.True(t, json.Valid(body), "%s", body)
		checkRequestAgainstEncodingJSON(t, body)
		if cr, err := parseChatRequest(body); err == nil {
			accepted++
			refs += int(b2u(cr.StoredInput))
		}
	}
	assert.Greater(t, accepted, 3000, "the generator should make bodies the parser accepts")
	assert.Greater(t, refs, accepted/10, "the generator should make references")
	assert.Less(t, refs, accepted*9/10, "the generator should make inputs without references")
}

// requestSeeds are FuzzParseChatRequest's seeds: bodies at the edges of
// what the parser reads and refuses.
var requestSeeds = []string{
	`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
	`{"model":"m","stream":true,"stream_options":null,"max_tokens":5}`,
	`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
	`{"model":"claude","system":"x","max_tokens":5,"stream":true}`,
	`{"model":"m","n":2,"max_completion_tokens":1.5e3}`, `[]`, `null`, `{`, ``,
	`{"model":"m","MAX_TOKENS":5}`, `{"\u006dodel":"m","best_of":3}`,
	`{"model":"m","modalities":["text","audio"],"audio":{"voice":"alloy"},"max_tokens":9}`,
	`{"modalities":0}`, `{"model":"m","modalities":[1]}`,
	`{"model":"m","Modalities":["audio"],"audio":null}`,
	`{"tools":[{"type":"web_search","Max_Uses":1}]}`, `{"tools":[{"type":"web_search","max_uses":"1"}]}`,
	`{"tools":[{"type":"web_search","TYPE":"bash"}]}`, `{"tools":[{"type":"web_search"}],"tools":[]}`,
	`{"tools":[{"type":"web_fetch_20250910","max_uses":2,"max_content_tokens":5e4}]}`,
	`{"tools":[{"type":"web_fetch_20250910","MAX_content_tokens":1}]}`, `{"tools":[{"type":"web_fetch","max_content_tokens":"1"}]}`,
	`{"tools":[{"type":"web_fetch","max_content_tokens":1,"max_content_tokens":null}]}`,
	`{"tools":[{"type":"web_fetch","max_content_tok\u0065ns":1}]}`, `{"model":"m","mcp_servers":[{"url":"u"}],"MCP_servers":null}`,
	`{"model":"m","input":[{"role":"user","content":"hi"},{"id":"msg_1"}]}`,
	`{"model":"m","input":[{"type":"message","id":"msg_1","content":[{"id":"x"}]},{ "Type" : "ITEM_reference" }]}`,
	`{"model":"m","input":{"a":{"id":"msg_1"}},"input":[{"id":"msg_1","role":null}]}`,
	`{"model":"m","stream_options":{"include_usage":true},"stream_options":{"INCLUDE_usage":1}}`,
	`{"tools":[],"tools":[]}`, ` { "model" : "m" , "n" : 2 } `, `{"model":"m"} x`, `{"model":"m",}`, `{"model" "m"}`,
	`{"MODEL":"m" 1}`, `{"model":"m","messages":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`,
	`{"a":` + strings.Repeat("[", 64) + `"image"` + strings.Repeat("]", 64) + `,"max_tokens":1}`,
	// Deeper than 64 from the input array, which scanInput reads (scanImages counts from each item's value).
	`{"input":[{"id":1,"c":` + strings.Repeat("[", 64) + `"input_image"` + strings.Repeat("]", 64) + `}]}`,
	`{"input":[{"id":1,"c":` + strings.Repeat("[", 65) + `"input_image"` + strings.Repeat("]", 65) + `}]}`,
}

func FuzzParseChatRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkReadWhole(t, body)
		checkRequestAgainstEncodingJSON(t, body)
		cr, at, err := parseStreamRequest(body)
		if err != nil {
			return
		}
		if cr.PromptTokens < int64(len(body)) || cr.EstimatedPromptTokens < 1 || cr.Choices < 1 ||
			cr.MaxOutput < 0 || cr.MaxOutput > maxUsageTokens {
			t.Fatalf("bad bounds %+v for %q", cr, body)
		}
		checkStreamUsageEdit(t, body, cr, at)
	})
}

// A process sends to a few models over and over: parsing a request that
// names a model seen before allocates nothing, and a name written with
// escapes or invalid UTF-8, which reads differently from its bytes, is
// decoded every time, whatever was seen before.
func TestParseChatRequestModelSeenBeforeAllocatesNothing(t *testing.T) {
	for _, model := range []string{"gpt-4.1-mini", "imagen-4.0-generate"} { // the second also names an image
		body := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`)
		_, err := parseChatRequest(body)
		require.NoError(t, err)
		assert.Zero(t, testing.AllocsPerRun(20, func() {
			cr, err := parseChatRequest(body)
			if err != nil || cr.Model != model {
				t.Fatalf("parsed %q, %v", cr.Model, err)
			}
		}), model)
	}

	for body, want := range map[string]string{
		`{"model":"gpt\u002d4.1-mini"}`:   "gpt-4.1-mini",
		`{"model":"gpt-4.1-min\u0069"}`:   "gpt-4.1-mini",
		"{\"model\":\"gpt-4.1-min\xff\"}": "gpt-4.1-min\uFFFD",
	} {
		for range 2 {
			assert.Equal(t, want, parsed(t, body).Model, body)
		}
	}
}

// A process that sends to a vendor's models in turn (a main model and its
// cheap one, whose names begin alike) reads each without an allocation:
// modelNames picks a name's set by its first bytes, and holds several
// names a set.
func TestParseChatRequestModelsOfOneVendorInTurnAllocateNothing(t *testing.T) {
	for _, models := range [][]string{{"gpt-4o", "gpt-4o-mini"}, {"gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"},
		{"claude-sonnet-4-5", "claude-haiku-4-5"}, {"gemini-2.5-flash", "gemini-2.5-pro"}} {
		var bodies [][]byte
		for _, model := range models {
			bodies = append(bodies, []byte(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`))
		}
		for _, body := range bodies {
			_, err := parseChatRequest(body)
			require.NoError(t, err)
		}
		i := 0
		assert.Zero(t, testing.AllocsPerRun(20, func() {
			cr, err := parseChatRequest(bodies[i%len(bodies)])
			if err != nil || cr.Model != models[i%len(models)] {
				t.Fatalf("parsed %q, %v", cr.Model, err)
			}
			i++
		}), "%v", models)
	}
}

// plainChat's readModel reads a model string as quoteEnd, jsonString and
// imageAllowance do, whether modelNames holds its name or not: over names
// that share their first bytes with the names held, are prefixes of them
// or extend them, are escaped, name images or are short, followed by what
// follows a model in a body, whole and cut, after each name is seen.
func TestReadModelReadsAsQuoteEnd(t *testing.T) {
	names := []string{"gpt-4o", "gpt-4o-mini", "gpt-4", "deepseek-v3.2", "deepseek-v3", "claude-sonnet-4-5", "image-1", "imagen-3",
		"o1", "o3-mini", "gpt\\u002d4o", "gpt-4o\\n", "gpt-4o\"", "m:online", "é-model", "gpt-4o\xff", strings.Repeat("m", 70)}
	held := 0
	for _, seen := range names { // each name seen last, then others that take its slot
		parseChatRequest([]byte(`{"model":"` + seen + `"}`)) // as bodies fill modelNames
		for _, name := range names {
			for _, after := range []string{`"`, `",`, `"}`, `x"`, ``, `\"`, "-x\",\"max_tokens\":1}"} {
				body := []byte(`"` + name + after)
				for cut := 1; cut <= len(body); cut++ { // readModel reads from a quote
					held += checkReadModel(t, body[:cut])
				}
			}
		}
	}
	assert.Greater(t, held, 30, "readModel should read names modelNames holds")
}

// checkReadModel checks readModel on the string at body[0]; it reports
// whether modelNames held its name.
func checkReadModel(t *testing.T, body []byte) int {
	t.Helper()
	var p plainChat
	end := p.readModel(body, 0)
	wantEnd, escaped := quoteEnd(body, 1)
	if wantEnd < 0 {
		require.Equal(t, -1, end, "%q", body)
		return 0
	}
	require.Equal(t, wantEnd+1, end, "%q", body)
	require.Equal(t, span{0, end}, p.model, "%q", body)
	require.Equal(t, imageAllowance(body[1:wantEnd], escaped), p.images, "%q", body)
	if p.modelName == "" {
		return 0
	}
	want, ok := jsonString(body[:end])
	require.True(t, ok, "%q", body)
	require.Equal(t, want, p.modelName, "%q", body)
	require.False(t, escaped, "%q", body)
	return 1
}

// requestKey reads every key as lookupName does: the fields, the keys
// chat requests write most, and keys in other cases, escaped, folded, or
// near misses of them.
func TestRequestKeyReadsAsLookupName(t *testing.T) {
	g := newJSONGen(46)
	g.keys = append(slices.Clone(requestFieldNames[:]), requestKeySeeds...)
	for range 20000 {
		var b bytes.Buffer
		g.key(&b)
		checkRequestKey(t, b.Bytes()[1:b.Len()-1])
	}
}

var requestKeySeeds = []string{"temperature", "top_p", "user", "stop", "tool_choice", "response_format", "seed", "metadata",
	"presence_penalty", "frequency_penalty", "reasoning_effort", "parallel_tool_calls", "Model", "MAX_TOKENS", "mod\\u0065l",
	"max_tokenſ", "\u212a", "", "é"}

func checkRequestKey(t *testing.T, raw []byte) {
	escaped := bytes.IndexByte(raw, '\\') >= 0
	f, m := lookupName(raw, escaped, requestFieldNames[:])
	gotF, gotM := requestKey(raw, escaped)
	require.Equal(t, m, gotM, "%q", raw)
	require.Equal(t, f, gotF, "%q", raw)
}

func FuzzRequestKeyReadsAsLookupName(f *testing.F) {
	for _, k := range append(slices.Clone(requestFieldNames[:]), requestKeySeeds...) {
		f.Add([]byte(k))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if json.Valid(append(append([]byte{'"'}, raw...), '"')) { // a key is valid JSON string content
			checkRequestKey(t, raw)
		}
	})
}

// itemField reads a key as lookupName reads it against itemFields, and
// isItemType a string as matchName reads it: in every case, escaped
// or not, and with the characters that fold to ASCII letters.
func FuzzItemFieldReadsAsLookupName(f *testing.F) {
	for _, k := range []string{"type", "TYPE", "Role", "rolE", "id", "ID", "iD", `t\u0079pe`, `\u0069d`, "typé", "idd", "tip", "",
		"item_reference", "ITEM_Reference", `item_\u0072eference`, "item_referencé", "item-reference", "\u017f", "\u212a",
		"encrypted_content", "Encrypted_Content", `encrypted_c\u006fntent`} {
		f.Add([]byte(k))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		value := append(append([]byte{'"'}, raw...), '"')
		if !json.Valid(value) {
			return
		}
		escaped := bytes.IndexByte(raw, '\\') >= 0
		i, m := lookupName(raw, escaped, itemFields)
		gotI, gotM := itemField(raw, escaped)
		require.Equal(t, m, gotM, "%q", raw)
		require.Equal(t, i, gotI, "%q", raw)
		require.Equal(t, matchName(raw, true, "item_reference") != noMatch, isItemType(value, escaped, "item_reference"), "%q", raw)
	})
}

// readWhole reads what the lexer reads, or declines, over generated
// bodies, the edge cases of the lexer's fast paths and the fuzz seeds.
func TestRequestReadWholeReadsWhatTheLexerReads(t *testing.T) {
	g := newJSONGen(23)
	var bodies [][]byte
	for _, s := range append(lexEdgeCases, requestSeeds...) {
		bodies = append(bodies, []byte(s))
	}
	for range 3000 {
		bodies = append(bodies, g.doc(), g.inputRequest())
	}
	done := 0
	for _, body := range bodies {
		done += int(b2u(checkReadWhole(t, body)))
	}
	assert.Greater(t, done, len(bodies)*3/4, "readWhole should read most bodies")
}

// checkReadWhole checks that readWhole, when it reads body, leaves what
// readLexed leaves and returns its error; it reports whether it read it.
func checkReadWhole(t *testing.T, body []byte) bool {
	var whole, lexed requestReader
	done, err := whole.readWhole(body)
	if !done {
		return false
	}
	lexErr := lexed.readLexed(body)
	require.Equal(t, fmt.Sprint(lexErr), fmt.Sprint(err), "%q", body)
	require.Equal(t, lexed, whole, "%q", body)
	return true
}

// mayCountImage passes every string imageAllowance counts, and
// mayCountPlainImage every such string without escapes: strings made of
// the pieces image names are made of, in every case, escaped or not.
func TestMayCountImagePassesEveryImageName(t *testing.T) {
	pieces := []string{"image", "IMAGE", "Image", "_image", "_IMAGE", "image_url", "input_image", "file_id", "FILE_ID", "x", "é",
		`\u0069`, `\u0065`, `\u0064`, `\u0049`, `\u0046`, `\u005f`, `\\`, `\"`, "_", "url", "i", "e", "d", "f", "I", "E", "D", "F"}
	rng := rand.New(rand.NewPCG(3, 14))
	counted := 0
	for range 100000 {
		var b strings.Builder
		for range 1 + rng.IntN(4) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		raw := []byte(b.String())
		if len(raw) > maxImageName || imageAllowance(raw, bytes.IndexByte(raw, '\\') >= 0) == 0 {
			continue
		}
		counted++
		require.True(t, mayCountImage(raw), "%q", raw)
		if bytes.IndexByte(raw, '\\') < 0 {
			require.True(t, mayCountPlainImage(raw), "%q", raw)
		}
	}
	assert.Greater(t, counted, 5000, "the generator should make image names")
}

// scanImages, scanStrings's quicker scanValue for values other than an
// input array, ends every value where scanValue does, refuses what it
// refuses, and allows the strings in it what scanValue's strings are
// allowed: from every position of generated documents and requests (their
// keys and words name images, plainly, escaped and in other cases), the
// edge cases and the seeds, whole and cut short.
func TestScanImagesReadsAsScanValue(t *testing.T) {
	g := newJSONGen(53)
	g.keys = append(slices.Clone(genKeys), scanImagesKeys...)
	inputs := [][]byte{benchRequestSmall, benchRequest8KiB,
		[]byte(`[{"type":"image_url","image_url":{"url":"https://x/` + strings.Repeat("a", 40) + `"}},"\u0069mage","IMAGE_URL","input_imag\u0065"]`)}
	for _, s := range slices.Concat(lexEdgeCases, requestSeeds) {
		inputs = append(inputs, []byte(s))
	}
	for range 1000 {
		inputs = append(inputs, g.doc(), g.inputRequest())
	}
	images := 0
	for _, data := range inputs {
		images += checkScanImages(t, data)
	}
	assert.Greater(t, images, len(inputs), "the inputs should name images")
}

// scanImagesKeys are keys that name images, or nearly do.
var scanImagesKeys = []string{"image", "Image", "image_url", "input_image", "file_id", "FILE_ID", "x_image", "imagex", "_image",
	"\u0130mage", "fil\u0065_id", strings.Repeat("image", 13), strings.Repeat("image", 12) + "abcd"}

func FuzzScanImagesReadsAsScanValue(f *testing.F) {
	for _, s := range slices.Concat(lexEdgeCases, requestSeeds, []string{string(benchRequestSmall), `[{"image_url":"file_id"},"\u0069mage",-1.5]`,
		`[{"role":"user","content":"hello"},{"role" : "assistant", "content":null}]`,
		`[{"role":"assistant","content":"image"},{"role":"\u0069mage","content":"x\"y"},{"role":"user","content":"file_id"}]`, `[{"content":"image","\u0069mage":"x"}, {}, []]`}) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkScanImages(t, data[:min(len(data), 2048)]) // its checks take time quadratic in len(data)
	})
}

// checkScanImages checks that scanImages reads data as scanValue with a
// callback adding up imageAllowance does, from each of its positions, and
// whole from its start when cut anywhere; it returns how many of the
// values read from a position were allowed images.
func checkScanImages(t *testing.T, data []byte) (images int) {
	t.Helper()
	want := func(p []byte, i int) (int, int64) {
		var sum int64
		end := scanValue(p, i, func(start, end, _ int, escaped bool) {
			if raw := p[start+1 : end-1]; len(raw) <= maxImageName { // every string, not only those the filters pass
				sum += imageAllowance(raw, escaped)
			}
		})
		if end < 0 {
			sum = 0
		}
		return end, sum
	}
	for i := range data {
		wantEnd, wantImages := want(data, i)
		end, got := scanImages(data, i)
		require.Equal(t, wantEnd, end, "%q at %d", data, i)
		require.Equal(t, wantImages, got, "%q at %d", data, i)
		images += int(b2u(got > 0))
	}
	for cut := range data {
		wantEnd, wantImages := want(data[:cut], 0)
		end, got := scanImages(data[:cut], 0)
		require.Equal(t, wantEnd, end, "%q cut at %d", data, cut)
		require.Equal(t, wantImages, got, "%q cut at %d", data, cut)
	}
	return images
}

// scanImages reads the arrays scanTextMessages reads first (objects of
// strings, as text chats' messages are) as scanValue does, whether
// scanTextMessages reads them whole or hands them to skipper.run where
// they leave that shape: over generated messages arrays, whole and cut,
// broken now and then.
func TestScanTextMessagesReadsAsScanValue(t *testing.T) {
	g := newJSONGen(67)
	var done, handed int
	for range 3000 {
		data := g.messages()
		checkScanImages(t, data)
		if end, _, depth := scanTextMessages(data, 0); depth > 0 {
			handed++
		} else if end > 0 {
			done++
		}
	}
	assert.Greater(t, done, 500, "scanTextMessages should read many arrays whole")
	assert.Greater(t, handed, 500, "scanTextMessages should hand many arrays over")
}

// messageKeys are the keys messages writes: those of chat messages, and
// keys that name images or nearly do, plainly or escaped.
var messageKeys = []string{"role", "content", "role", "content", "name", "Content", "rol", "content_", "image", "image_url",
	"file_id", "input_image", "roles", "contents", `rol\u0065`, `\u0069mage`}

// messages returns a random messages array: objects of messageKeys and
// strings, mostly, with now and then another value or element, random
// whitespace, and one corruption one time in eight.
func (g *jsonGen) messages() []byte {
	elements := make([]string, g.r.IntN(4))
	for i := range elements {
		var e bytes.Buffer
		g.space(&e)
		if g.r.IntN(12) == 0 {
			g.value(&e, 2)
		} else {
			g.message(&e)
		}
		g.space(&e)
		elements[i] = e.String()
	}
	data := []byte("[" + strings.Join(elements, ",") + "]")
	if g.r.IntN(8) == 0 {
		return g.corrupt(data)
	}
	return data
}

// message writes an object of messageKeys and, mostly, strings.
func (g *jsonGen) message(b *bytes.Buffer) {
	members := make([]string, g.r.IntN(4))
	for i := range members {
		var m bytes.Buffer
		g.space(&m)
		m.WriteString(`"` + messageKeys[g.r.IntN(len(messageKeys))] + `"`)
		g.space(&m)
		m.WriteByte(':')
		g.space(&m)
		switch k := g.r.IntN(10); {
		case k == 0:
			g.value(&m, 2)
		case k < 3:
			g.string(&m, g.word())
		case k < 5:
			g.string(&m, strings.Repeat("hello ", g.r.IntN(15)))
		default:
			g.string(&m, []string{"user", "system", "assistant", "hello", "image", "Image_URL", "x_image", "file"}[g.r.IntN(8)])
		}
		g.space(&m)
		members[i] = m.String()
	}
	b.WriteString("{" + strings.Join(members, ",") + "}")
}

// commonKey reads a key as quoteEnd and requestKey do, or declines: from
// every position of keys of every field, near misses of the keys it
// reads, generated bodies and the seeds, whole and cut short.
func TestCommonKeyReadsAsQuoteEndAndRequestKey(t *testing.T) {
	g := newJSONGen(59)
	var inputs [][]byte
	for _, k := range slices.Concat(requestFieldNames[:], requestKeySeeds, []string{"model", "models", "model_", "modeL", "messages",
		"messagesx", "message", "max_tokens", "max_tokensx", "max_token", "max_tokenS", "stream", "streamx", "stream_options", "m\\u006fdel"}) {
		for _, after := range []string{`":1}`, `"`, `":`, `x"`, `\"`, "\":\"" + strings.Repeat("a", 20) + `"}`} {
			inputs = append(inputs, []byte(`{"`+k+after))
		}
	}
	for _, s := range requestSeeds {
		inputs = append(inputs, []byte(s))
	}
	for range 2000 {
		inputs = append(inputs, g.doc())
	}
	read := 0
	for _, data := range inputs {
		read += checkCommonKey(t, data)
	}
	assert.Greater(t, read, len(inputs)/4, "commonKey should read the common keys")
}

func FuzzCommonKeyReadsAsQuoteEndAndRequestKey(f *testing.F) {
	for _, s := range slices.Concat(requestSeeds, []string{`{"max_tokens":1}`, `{"stream":true}`, `{"messages":[]}`, `"model"`}) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkCommonKey(t, data) })
}

// checkCommonKey checks commonKey from each position of data, and of data
// cut there; it returns how many keys it read.
func checkCommonKey(t *testing.T, data []byte) (read int) {
	t.Helper()
	for _, p := range [][]byte{data, data[:len(data)/2]} {
		for i := range p {
			field, end := commonKey(p, i)
			if end < 0 {
				require.Equal(t, reqOther, field, "%q at %d", p, i)
				continue
			}
			wantEnd, escaped := quoteEnd(p, i)
			require.Equal(t, wantEnd, end, "%q at %d", p, i)
			require.False(t, escaped, "%q at %d", p, i)
			f, m := requestKey(p[i:end], false)
			require.Equal(t, exactMatch, m, "%q at %d", p, i)
			require.Equal(t, int(field), f, "%q at %d", p, i)
			require.Zero(t, imageAllowance(p[i:end], false), "%q at %d", p, i)
			read++
		}
	}
	return read
}

// plainChat reads a body as a requestReader does, or hands it over: over
// generated chat bodies (the members plainChat reads, with values of
// their types and of others, repeated, null, among other members, broken
// now and then), the generated documents, the edge cases and the seeds,
// whole and cut, parseChatRequestFallbacks answers what a requestReader
// reading the body from its start answers.
func TestPlainChatReadsAsTheRequestReader(t *testing.T) {
	g := newJSONGen(61)
	inputs := [][]byte{benchRequestSmall, benchRequest8KiB}
	for _, s := range slices.Concat(lexEdgeCases, requestSeeds, plainChatSeeds) {
		inputs = append(inputs, []byte(s))
	}
	for range 4000 {
		inputs = append(inputs, g.chatBody())
	}
	for range 500 {
		inputs = append(inputs, g.doc())
	}
	var whole, handed int
	for _, body := range inputs {
		for _, p := range [][]byte{body, body[:len(body)/2]} {
			w, h := checkPlainChat(t, p)
			whole, handed = whole+w, handed+h
		}
	}
	assert.Greater(t, whole, len(inputs)/10, "plainChat should read many chat bodies whole")
	assert.Greater(t, handed, len(inputs)/10, "plainChat should hand many bodies over after members it read")
}

// plainChatSeeds are bodies at plainChat's edges.
var plainChatSeeds = []string{
	`{"model":"m:online","max_tokens":1}`, `{"model":"imagen-3","messages":[]}`, `{"model":"gpt\u002d4o"}`, "{\"model\":\"a\xff\"}",
	`{"model":"m","model":"n"}`, `{"model":"m","model":null}`, `{"model":null}`, `{"model":1}`, `{"stream":true,"stream":false}`,
	`{"stream":tru}`, `{"stream":truex}`, `{"stream":trux}`, `{"stream":falsy}`, `{"stream":"true"}`, `{"max_tokens":-1}`, `{"max_tokens":1.5}`, `{"max_tokens":01}`,
	`{"max_tokens":"64"}`, `{"messages":"hi"}`, `{"messages":{"image":1}}`, `{"messages":[` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `]}`,
	`{"model":"m","temperature":1,"model":"n"}`, `{"model":"m","MODEL":"n"}`, `{"model":"m","max_tokens":5,"n":2}`,
	`{"model":"m"}x`, `{"model":"m",}`, `{"model":"m" "stream":true}`, `{"model":"m","stream":true,"stream_options":null}`,
	` { "model" : "m" , "max_tokens" : 7 } `, `{}`, `{"model":"` + strings.Repeat("a", 70) + `"}`,
	`{"model":"0000",0messages":[]}`, `{"max_tokens":1,stream":true}`, // a key without its opening quote
	// A byte away from the compact SDK form: a BOM, a byte after the
	// object, counts written otherwise, an escaped quote in a content, an
	// escape in a role or a key, a key repeated or folded after the
	// messages, a field of the same name inside a message.
	"\xEF\xBB\xBF{\"model\":\"m\",\"max_tokens\":5}", "{\"model\":\"m\",\"max_tokens\":5}\x00", "{\"model\":\"m\",\"max_tokens\":5}\v",
	`{"model":"m","max_tokens":-0}`, `{"model":"m","max_tokens":5,"max_tokens":1e3}`, `{"model":"m","max_tokens":99999999999999999999}`,
	`{"model":"m","messages":[{"role":"user","content":"a\"},{\"role\":\"user\",\"content\":\"b"}],"max_tokens":5}`,
	`{"model":"m","messages":[{"role":"us\u0065r","content":"hi"}],"max_tok\u0065ns":50}`,
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"MAX_tokens":9}`,
	`{"model":"m","messages":[{"role":"user","content":"hi","max_tokens":9}],"max_tokens":5,"model":"n"}`,
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}],\"max_tokens\":5}",
	`{"model":"m","messages":[{"role":"user" ,"content":"hi"}] ,"max_tokens":5 }`,
}

// chatBody returns a random chat request body, broken one time in eight.
func (g *jsonGen) chatBody() []byte {
	var b bytes.Buffer
	g.space(&b)
	b.WriteByte('{')
	for i := range g.r.IntN(6) {
		if i > 0 {
			g.space(&b)
			b.WriteByte(',')
		}
		g.space(&b)
		key := []string{"model", "messages", "max_tokens", "stream"}[g.r.IntN(4)]
		if g.r.IntN(6) == 0 {
			g.key(&b)
		} else {
			g.string(&b, key)
		}
		g.space(&b)
		b.WriteByte(':')
		g.space(&b)
		g.chatValue(&b, key)
		g.space(&b)
	}
	b.WriteByte('}')
	g.space(&b)
	if g.r.IntN(8) == 0 {
		return g.corrupt(b.Bytes())
	}
	return b.Bytes()
}

// chatValue writes a value for key: one of its type most of the time.
func (g *jsonGen) chatValue(b *bytes.Buffer, key string) {
	if g.r.IntN(5) == 0 {
		g.value(b, 3)
		return
	}
	switch key {
	case "model":
		g.string(b, []string{"gpt-4o", "deepseek-v3.2", "image-1", "m:online", "", "x_image", g.word()}[g.r.IntN(7)])
	case "messages":
		b.WriteString(`[{"role":"user","content":`)
		switch g.r.IntN(3) {
		case 0:
			g.string(b, g.word())
		case 1:
			b.WriteString(`[{"type":"image_url","image_url":{"url":"https://x/a.png"}},{"type":"text","text":"hi"}]`)
		default:
			g.value(b, 2)
		}
		b.WriteString(`}]`)
	case "max_tokens":
		g.number(b)
	default:
		b.WriteString([]string{"true", "false"}[g.r.IntN(2)])
	}
}

// checkPlainChat checks that parseChatRequestFallbacks answers for body
// what a requestReader reading it from its start answers; it reports
// whether plainChat read body whole, and whether it handed it over after
// members it read.
func checkPlainChat(t *testing.T, body []byte) (whole, handed int) {
	t.Helper()
	var got, want chatRequest
	var gotAt, wantAt streamOptionsAt
	models, err := parseChatRequestFallbacks(body, &got, &gotAt)
	wantModels, wantErr := parseRequest(body, &want, &wantAt, &plainChat{}, -1, true)
	require.Equal(t, fmt.Sprint(wantErr), fmt.Sprint(err), "%q", body)
	if err == nil {
		require.Equal(t, want, got, "%q", body)
		require.Equal(t, wantAt, gotAt, "%q", body)
		require.Equal(t, wantModels, models, "%q", body)
	}
	var p plainChat
	at := p.read(body)
	return int(b2u(at == 0)), int(b2u(at > 0 && p != plainChat{}))
}

func FuzzPlainChatReadsAsTheRequestReader(f *testing.F) {
	for _, s := range slices.Concat(requestSeeds, plainChatSeeds, []string{string(benchRequestSmall)}) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkPlainChat(t, body) })
}

// A model or a count given twice is read by encoding/json and Python as
// its last value, by gjson (common in Go relays) and simdjson as its
// first: priced at one and run at the other, a body of "max_tokens":1000000 then
// "max_tokens":16 was reserved 16 tokens and billed a million (found by an
// adversarial hunt through the proxy: $0.42 against a $0.001 Limit). Such
// a body is refused, on the fast path too, and nothing is sent.
func TestRequestModelOrCountGivenTwiceIsRefused(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"model":"gpt-4.1-nano"}`,
		`{"model":"m","model":"m"}`,
		`{"model":"m","stream":true,"\u006dodel":"n"}`,
		`{"model":"m","max_tokens":1000000,"messages":[{"role":"user","content":"hi"}],"max_tokens":16}`,
		`{"model":"m","max_tokens":16,"max_tokens":16}`,
		`{"model":"m","max_tokens":16,"stream":true,"max_tokens":null}`,
		`{"model":"m","n":10000,"messages":[],"n":1}`,
		`{"model":"m","best_of":5,"prompt":"x","best_of":1}`,
		`{"model":"m","max_completion_tokens":9,"max_completion_tokens":1}`,
		`{"model":"m","input":"x","max_output_tokens":9,"max_output_tokens":1}`,
		`{"model":"m","max_tokens":9,"max\u005ftokens":1}`,
	} {
		_, err := parseChatRequest([]byte(body))
		require.ErrorIs(t, err, errAmbiguousRequest, body)
		assert.ErrorContains(t, err, "given twice", body)
	}

	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","max_tokens":1000000,"messages":[{"role":"user","content":"hi"}],"max_tokens":16}`))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.Zero(t, api.hits.Load(), "nothing was sent")
}
