package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestObserveUsageReadsJSONAnswers(t *testing.T) {
	tests := []struct {
		name, body string
		want       Usage // when not ok, what the answer reported before it broke off
		ok         bool
	}{
		{"openai", openAIJSON, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true},
		{"anthropic adds cache reads and writes to input", anthropicJSON,
			Usage{InputTokens: 117, CachedInputTokens: 100, CacheWriteInputTokens: 5, OutputTokens: 7}, true},
		{"anthropic one-hour cache writes", `{"type":"message","usage":{"input_tokens":12,"cache_creation_input_tokens":50,"cache_read_input_tokens":0,` +
			`"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30},"output_tokens":7}}`,
			Usage{InputTokens: 62, CacheWriteInputTokens: 50, CacheWrite1hInputTokens: 30, OutputTokens: 7}, true},
		{"anthropic one-hour writes above the total are read as the total", `{"usage":{"input_tokens":12,"cache_creation_input_tokens":10,` +
			`"cache_creation":{"ephemeral_1h_input_tokens":30},"output_tokens":7}}`,
			Usage{InputTokens: 42, CacheWriteInputTokens: 30, CacheWrite1hInputTokens: 30, OutputTokens: 7}, true},
		{"responses input includes cached", `{"object":"response","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":20},"output_tokens":9,"total_tokens":59}}`,
			Usage{InputTokens: 50, CachedInputTokens: 20, OutputTokens: 9}, true},
		{"keep-alive blank lines first", "\n\n \n" + openAIJSON + "\n", Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, true},
		{"usage first", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[]}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"escaped usage key", `{"\u0075sage":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"a key that is not usage", `{"usage\n":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{}, false},
		{"usage in another case", `{"Usage":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{InputTokens: 1, OutputTokens: 2}, false},                                                                          // what encoding/json reads, not ok
		{"usage and usage in another case", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"USAGE":{"prompt_tokens":9,"completion_tokens":9}}`, Usage{InputTokens: 9, OutputTokens: 9, mixed: true}, false}, // the dearer reading, not ok
		{"usage in another case, repeating usage", `{"Usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"null usage in another case", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"Usage":null}`, Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"no usage", `{"choices":[{"message":{"content":"hi"}}]}`, Usage{}, false},
		{"null usage", `{"choices":[],"usage":null}`, Usage{}, false},
		{"null after usage", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null}`, Usage{InputTokens: 1, OutputTokens: 2}, false}, // what encoding/json reads, not ok
		{"empty usage", `{"usage":{}}`, Usage{}, false},
		{"nested usage is not top-level", `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]}`, Usage{}, false},
		{"truncated", openAIJSON[:len(openAIJSON)-1], Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, false}, // what it reported, not ok
		{"trailing garbage", openAIJSON + "x", Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, false},
		{"invalid inside", strings.Replace(openAIJSON, `"index":0`, `"index":01`, 1), Usage{}, false},
		{"array", `[` + openAIJSON + `]`, Usage{}, false},
		{"not json", `<html>bad gateway</html>`, Usage{}, false},
		{"lying usage", `{"usage":{"prompt_tokens":-1,"completion_tokens":5}}`, Usage{}, false},
		{"oversized usage", `{"usage":{"prompt_tokens":1,"completion_tokens":1,"x":"` + strings.Repeat("a", maxUsageValue) + `"}}`, Usage{InputTokens: 1, OutputTokens: 1}, false}, // what it reported, not ok
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rep := observe(t, "application/json", strings.NewReader(tt.body))
			assert.Equal(t, tt.body, got)
			assert.Equal(t, tt.ok, rep.ok)
			assert.Equal(t, tt.want, rep.u)
		})
	}
}

func TestObserveUsageKeepsTheLastUsageValueWhateverTheReads(t *testing.T) {
	body := `{"usage":{"prompt_tokens":9,"completion_tokens":9},"usage":{"prompt_tokens":2,"completion_tokens":3}}`
	for _, r := range []func() io.Reader{
		func() io.Reader { return strings.NewReader(body) },
		func() io.Reader { return iotestOneByte(body) },
		func() io.Reader { return &splitReader{data: []byte(body), sizes: []int{7, 4096, 3}} },
	} {
		got, rep := observe(t, "application/json", r())
		require.Equal(t, body, got)
		assert.True(t, rep.ok)
		assert.Equal(t, Usage{InputTokens: 2, OutputTokens: 3}, rep.u)
	}
}

func TestObserveUsageRefusesAnOversizedUsageValueEvenWhenAnotherFollows(t *testing.T) {
	// encoding/json merges a later usage object into an earlier one: what
	// the oversized one held, unread, may still count.
	long := `{"usage":{"prompt_tokens":1,"completion_tokens":1,"x":"` + strings.Repeat("a", maxUsageValue) + `"},`
	body := long + `"usage":{"prompt_tokens":2,"completion_tokens":3}}`
	_, rep := observe(t, "application/json", &splitReader{data: []byte(body), sizes: []int{7, 4096, 3}})
	assert.False(t, rep.ok)
}

// randomAnswer writes a JSON answer with zero or more usage members,
// among other members.
func (g *jsonGen) randomAnswer() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range 1 + g.r.IntN(4) {
		if i > 0 {
			b.WriteByte(',')
		}
		g.space(&b)
		if g.r.IntN(4) == 0 {
			g.output(&b)
			continue
		}
		if g.r.IntN(5) == 0 {
			g.serviceTier(&b)
			continue
		}
		if g.r.IntN(2) == 0 {
			keys := g.keys
			g.keys = []string{"usage"}
			g.key(&b)
			g.keys = keys
			b.WriteByte(':')
			g.usageObject(&b)
			continue
		}
		g.key(&b)
		b.WriteByte(':')
		g.value(&b, 2)
	}
	b.WriteByte('}')
	if g.r.IntN(8) == 0 {
		return g.corrupt(b.Bytes())
	}
	return b.Bytes()
}

// output writes an "output" member (sometimes under another spelling):
// an array of items, mostly objects whose type names a server tool call.
func (g *jsonGen) output(b *bytes.Buffer) {
	keys := g.keys
	g.keys = []string{"output", "output", "output", "Output"}
	g.key(b)
	b.WriteByte(':')
	b.WriteByte('[')
	types := []string{"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call", "message", "web_search_call"}
	for i := range g.r.IntN(5) {
		if i > 0 {
			b.WriteByte(',')
		}
		g.space(b)
		if g.r.IntN(6) == 0 {
			g.value(b, 1)
			continue
		}
		b.WriteString(`{`)
		g.keys = []string{"type", "type", "type", "id", "Type"}
		for j := range 1 + g.r.IntN(3) {
			if j > 0 {
				b.WriteByte(',')
			}
			g.key(b)
			b.WriteByte(':')
			g.string(b, types[g.r.IntN(len(types))])
		}
		b.WriteString(`}`)
	}
	b.WriteByte(']')
	g.keys = keys
}

// serviceTier writes a "service_tier" member (sometimes under another
// spelling): mostly a tier's name, sometimes escaped, sometimes null or
// another value.
func (g *jsonGen) serviceTier(b *bytes.Buffer) {
	keys := g.keys
	g.keys = []string{"service_tier", "service_tier", "service_tier", "Service_Tier", "SERVICE_TIER"}
	g.key(b)
	g.keys = keys
	b.WriteByte(':')
	g.space(b)
	switch g.r.IntN(8) {
	case 0:
		b.WriteString("null")
	case 1:
		g.value(b, 2)
	case 2:
		b.WriteString([]string{`"priorit\u0079"`, `"\u0070riority"`, `"priority\u0000"`, `"prio\"rity"`}[g.r.IntN(4)])
	default:
		g.string(b, []string{"priority", "priority", "default", "flex", "scale", "auto", "Priority", "priority "}[g.r.IntN(8)])
	}
}

// referenceAnswerTier reads the tier an answer (a valid JSON object) says
// it ran at, as encoding/json reads it into a string field (a key in any
// case, the last string value) and as an exact decoder does (the last
// value of the exact key): Priority when either reads "priority".
func referenceAnswerTier(body []byte) (priority bool) {
	var goAnswer struct {
		ServiceTier string `json:"service_tier"`
	}
	json.Unmarshal(body, &goAnswer) // a value of another type is skipped
	var m map[string]json.RawMessage
	var exact string
	if json.Unmarshal(body, &m) == nil && m["service_tier"] != nil {
		json.Unmarshal(m["service_tier"], &exact)
	}
	return goAnswer.ServiceTier == "priority" || exact == "priority"
}

// referenceAnswerModels are the models an answer says served it, read
// with encoding/json's tokens: exact, the last top-level "model" key
// (decoded, in its case), as an exact decoder reads it; folded, the last
// key "model" in any case (as strings.EqualFold, and encoding/json,
// compare it) whose value names one, as encoding/json reads it (a null
// leaves the field as it was). A value names a model when it is a string
// within maxModelValue, escapes decoded.
func referenceAnswerModels(body []byte) (exact, folded modelHash) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return 0, 0
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return 0, 0
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return 0, 0
		}
		if !strings.EqualFold(k.(string), "model") {
			continue
		}
		h := referenceModelValue(v)
		if k == "model" {
			exact = h
		}
		if h != 0 {
			folded = h
		}
	}
	return exact, folded
}

// referenceModelValue is the model a value v names, or 0.
func referenceModelValue(v json.RawMessage) modelHash {
	var name string
	switch {
	case len(v) > maxModelValue || v[0] != '"':
	case !bytes.ContainsRune(v, '\\'):
		return hashModel(v[1 : len(v)-1])
	case json.Unmarshal(v, &name) == nil: // an escape, decoded
		return hashModel(name)
	}
	return 0
}

// referenceOutputCalls counts, with encoding/json, the calls the outputs
// of an answer list (of repeated outputs, each kind its most); ok is false
// when there is no output or one a scanner must not count: not an array,
// a key spelled "output" or "type" in another case, or an item type that
// encoding/json and a decoder keeping the last value read differently.
func referenceOutputCalls(body []byte) (calls ToolCalls, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return calls, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return calls, false
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return calls, false
		}
		switch {
		case k != "output" && strings.EqualFold(k.(string), "output"):
			return ToolCalls{}, false
		case k != "output":
			continue
		case hasFoldedKey(v, "type"):
			return ToolCalls{}, false
		}
		var items []json.RawMessage
		if json.Unmarshal(v, &items) != nil {
			return calls, false
		}
		var these ToolCalls
		for _, item := range items {
			var fields map[string]json.RawMessage
			if json.Unmarshal(item, &fields) != nil {
				continue // not an object
			}
			var typ string
			json.Unmarshal(fields["type"], &typ)
			var goItem struct{ Type string }
			if json.Unmarshal(item, &goItem); goItem.Type != typ {
				return ToolCalls{}, false // a null after the type: encoding/json keeps it
			}
			for k, kind := range toolKinds {
				if kind.item != "" && typ == kind.item {
					*these.of(toolKind(k))++
				}
			}
		}
		calls, ok = maxCalls(calls, these), true
	}
	return calls, ok
}

// referenceAnswerUsage reads an answer's usage with encoding/json, as a
// Go SDK does (case-insensitive, merging), and as an exact decoder does.
func referenceAnswerUsage(body []byte) (goW wireUsage, goOK bool, exactW wireUsage, exactOK bool, found bool) {
	var goAnswer struct {
		Usage refUsage `json:"usage"`
	}
	goOK = json.Unmarshal(body, &goAnswer) == nil && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
	goW = goAnswer.Usage.wire()
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		if v, ok := m["usage"]; ok {
			found = true
			exactW, exactOK = exactUsageReading(v)
		}
	}
	return goW, goOK, exactW, exactOK, found
}

func TestJSONUsageScannerAgreesWithEncodingJSON(t *testing.T) {
	g := newJSONGen(7)
	for range 10000 {
		body := g.randomAnswer()
		checkAnswerUsage(t, body, splitRandomly(g, body))
	}
}

// The output is read by a lexer of its own, which counts nesting from the
// answer's object: an output nested to encoding/json's limit is one level
// too deep for it.
func TestJSONUsageScannerRefusesAnOutputNestedBeyondEncodingJSONsLimit(t *testing.T) {
	deep := strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)
	body := []byte(`{"usage":{"input_tokens":10,"output_tokens":5},"output":` + deep + `}`)
	require.False(t, json.Valid(body))
	checkAnswerUsage(t, body, [][]byte{body})
	checkAnswerUsage(t, body, splitRandomly(newJSONGen(3), body))
	body = []byte(`{"usage":{"input_tokens":10,"output_tokens":5},"output":` + deep[1:len(deep)-1] + `}`)
	require.True(t, json.Valid(body))
	var s jsonUsageScanner
	s.write(body)
	_, ok := s.result()
	require.True(t, ok, "an output as deep as encoding/json allows")
}

func FuzzJSONUsageScannerAgreesWithEncodingJSON(f *testing.F) {
	g := newJSONGen(14)
	for range 10 {
		f.Add(g.randomAnswer(), uint8(g.r.IntN(256)))
	}
	f.Add([]byte(openAIJSON), uint8(3))
	f.Add([]byte(anthropicJSON), uint8(200))
	for _, models := range []string{`"model":"a","Model":"b"`, `"MODEL":"b"`, `"Model":"b","model":"a","mOdel":null`, `"model":"a","model":null`} {
		f.Add([]byte(`{"id":"c",`+models+`,"usage":{"prompt_tokens":1,"completion_tokens":2}}`), uint8(4))
	}
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		var parts [][]byte
		for p := body; len(p) > 0; p = p[min(len(p), int(chunk)%17+1):] {
			parts = append(parts, p[:min(len(p), int(chunk)%17+1)])
		}
		checkAnswerUsage(t, body, parts)
	})
}

// checkAnswerUsage checks what jsonUsageScanner reads of body, written in
// parts: the usage encoding/json and an exact decoder both read, or
// nothing when they disagree (or a key reads as a usage key in another
// case).
func checkAnswerUsage(t *testing.T, body []byte, parts [][]byte) {
	t.Helper()
	var s jsonUsageScanner
	for _, part := range parts {
		s.write(part)
	}
	u, ok := s.result()
	gw, gok, xw, xok, found := referenceAnswerUsage(body)
	ranAt := referenceAnswerTier(body)
	if s.lex.end() { // a valid object, read whole
		require.Equal(t, ranAt, u.ranAtPriority, "encoding/json or an exact decoder reads the tier of %s differently", body)
		exact, folded := referenceAnswerModels(body)
		require.Equal(t, exact, u.servedBy, "the model of %s", body)
		if folded == exact {
			folded = 0
		}
		require.Equal(t, folded, u.servedFolded, "the model encoding/json reads of %s", body)
	}
	u.servedBy, u.servedFolded = 0, 0
	if ok {
		require.True(t, gok && xok && found, "%s", body)
		gu, _ := gw.usage()
		xu, _ := xw.usage()
		if calls, counted := referenceOutputCalls(body); counted && len(body) <= maxResponseValue {
			c := callCount{calls: calls, counted: true}
			c.addTo(&gu)
			c.addTo(&xu)
		}
		gu.ranAtPriority, xu.ranAtPriority = ranAt, ranAt
		require.Equal(t, gu, u, "encoding/json reads %s differently", body)
		require.Equal(t, xu, u, "an exact decoder reads %s differently", body)
		return
	}
	if gok && xok && found && gw == xw && len(body) <= maxUsageValue && !hasFoldedKey(body, append([]string{"usage"}, usageNames...)...) {
		wu, wok := gw.usage()
		// A usage of zeros is no usage, and one whose chat prompt cannot
		// hold its cache reads is not trusted (see readResult).
		require.False(t, wok && !gw.countsNothing() && !gw.readsAmiss(), "%s: both decoders read %+v, the scanner refused it", body, wu)
	}
}

// splitRandomly cuts data into chunks of random sizes.
func splitRandomly(g *jsonGen, data []byte) [][]byte {
	var parts [][]byte
	for len(data) > 0 {
		n := min(len(data), 1+g.r.IntN(9))
		parts = append(parts, data[:n])
		data = data[n:]
	}
	return parts
}

// A compact usage object of integer counts and details objects, the shape
// providers send, is read whole in one pass (see usageReadings.readWhole): what it reads, and
// what it leaves to the lexer (a near miss of that shape), agrees with
// encoding/json and an exact decoder, read whole and in parts.
func TestJSONUsageScannerReadsAFlatUsageAsEncodingJSON(t *testing.T) {
	g := newJSONGen(41)
	counts := []string{"0", "7", "-3", "4096", "999999999", "12345678901234567890", "-0", "01", "1.5", "2e3", "null", `"3"`, "{}", "-"}
	details := []string{`{}`, `{"cached_tokens":3}`, `{"cached_tokens":3,"audio_tokens":1}`, `{"audio_tokens":2,"Cached_tokens":5}`,
		`{"cached_tokens":{}}`, `{"cached_tokens":1.5}`, `{"cached_tokens":null}`, `{"x":7,"cached_tokens":-1}`, `{ "cached_tokens":1}`,
		`{"cache_creation_token_details":{"ephemeral_1h_input_tokens":9}}`, `{"cached_tokens":2,}`, `{"cached_tokens":2`,
		`{"image_tokens":4}`, `{"cached_tokens":0,"text_tokens":11,"audio_tokens":0,"image_tokens":6}`, `{"reasoning_tokens":0,"image_tokens":1290}`,
		`{"Image_tokens":4}`, `{"image_tokens":-2}`, `{"image_tokens":null,"image_tokens":3}`}
	for range 20000 {
		var b bytes.Buffer
		b.WriteString(`{"id":"c1","usage":{`)
		for i := range g.r.IntN(11) {
			if i > 0 {
				b.WriteByte(',')
			}
			k := usageNames[g.r.IntN(len(usageNames))]
			switch g.r.IntN(10) {
			case 0:
				k = strings.ToUpper(k[:1]) + k[1:]
			case 1:
				k = strings.NewReplacer("k", "\u212a", "s", "\u017f").Replace(k)
			case 2:
				k += []string{"_", "x", "é"}[g.r.IntN(3)]
			}
			fmt.Fprintf(&b, "%q:", k)
			switch g.r.IntN(6) {
			case 0:
				b.WriteString(counts[g.r.IntN(len(counts))])
			case 1:
				b.WriteString(details[g.r.IntN(len(details))])
			default:
				fmt.Fprint(&b, g.r.IntN(1000))
			}
		}
		b.WriteString(`},"model":"m"}`)
		body := b.Bytes()
		checkAnswerUsage(t, body, [][]byte{body})
		checkAnswerUsage(t, body, splitRandomly(g, body))
	}
}

// commonAnswerKey reads a key as quoteEnd and answerKey do, or declines:
// from every position of the names it reads, near misses of them, other
// keys, generated answers and the sample answers, whole and cut short.
func TestCommonAnswerKeyReadsAsQuoteEndAndAnswerKey(t *testing.T) {
	g := newJSONGen(61)
	var inputs [][]byte
	for _, k := range slices.Concat(commonAnswerNames, answerKeys, []string{"ids", "i", "objects", "Object", "creat", "modeL", "model_",
		"choice", "choices_", "usag", "usage1", "typ", "types", "rol", "roles", "contents", "conten", "u\\u0073age", "system_fingerprint"}) {
		for _, after := range []string{`":1}`, `"`, `":`, `x"`, `\"`, "\":\"" + strings.Repeat("a", 20) + `"}`} {
			inputs = append(inputs, []byte(`{"`+k+after))
		}
	}
	for _, s := range slices.Concat(answerEdgeCases, []string{openAIJSON, anthropicJSON, benchAnswerSmall, string(benchAnswerShort)}) {
		inputs = append(inputs, []byte(s))
	}
	read := 0
	for i := range 1000 {
		read += checkCommonAnswerKey(t, g.randomAnswer()) + checkCommonAnswerKey(t, g.structuredAnswer())
		if i < len(inputs) {
			read += checkCommonAnswerKey(t, inputs[i])
		}
	}
	assert.Greater(t, read, 1000, "commonAnswerKey should read the common keys")
	for _, name := range commonAnswerNames { // each in a slot of its own
		k, m, end := commonAnswerKey([]byte(name+`":1,"pad":0}`), 0)
		require.Equal(t, len(name), end, name)
		wantK, wantM := answerKey([]byte(name), false)
		require.Equal(t, wantM, m, name)
		require.Equal(t, wantK, k, name)
	}
}

func FuzzCommonAnswerKeyReadsAsQuoteEndAndAnswerKey(f *testing.F) {
	for _, s := range slices.Concat(answerEdgeCases, []string{openAIJSON, anthropicJSON, string(benchAnswerShort), `"usage"`, `{"id":1}`}) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkCommonAnswerKey(t, data) })
}

// checkCommonAnswerKey checks commonAnswerKey from each position of data,
// and of data cut there; it returns how many keys it read.
func checkCommonAnswerKey(t *testing.T, data []byte) (read int) {
	t.Helper()
	type reading struct {
		k   int
		m   nameMatch
		end int
	}
	for _, p := range [][]byte{data, data[:len(data)/2]} {
		for i := range p {
			var got reading
			if got.k, got.m, got.end = commonAnswerKey(p, i); got.end < 0 {
				require.Equal(t, reading{-1, noMatch, -1}, got, "%q at %d", p, i)
				continue
			}
			want := reading{end: -1} // a plain key, as quoteEnd and answerKey read it
			if end, escaped := quoteEnd(p, i); end >= 0 && !escaped {
				want.k, want.m = answerKey(p[i:end], false)
				want.end = end
			}
			require.Equal(t, want, got, "%q at %d", p, i)
			read++
		}
	}
	return read
}

// answerKey reads every key as lookupName does: the keys answers write,
// and keys in other cases, escaped, or near misses of them.
func TestAnswerKeyReadsAsLookupName(t *testing.T) {
	g := newJSONGen(44)
	g.keys = append(slices.Clone(answerKeys), "id", "object", "created", "choices", "system_fingerprint", "type", "role",
		"content", "stop_reason", "stop_sequence", "Usage", "mode", "usages", "")
	for range 5000 {
		var b bytes.Buffer
		g.key(&b)
		key := b.Bytes()
		raw, escaped := key[1:len(key)-1], bytes.IndexByte(key, '\\') >= 0
		k, m := lookupName(raw, escaped, answerKeys)
		gotK, gotM := answerKey(raw, escaped)
		require.Equal(t, m, gotM, "%s", key)
		if m != noMatch {
			require.Equal(t, k, gotK, "%s", key)
		}
	}
}

// answerEdgeCases are answers at the edges of what the scanner's one
// pass (readWhole) takes: repeated keys, keys in another case or escaped,
// values their readers refuse, values nested deep, text after the object.
var answerEdgeCases = []string{
	`{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
	`{"usage":{"prompt_tokens":1,"completion_tokens":2},"Usage":{"prompt_tokens":3,"completion_tokens":4}}`,
	`{"USAGE":{"prompt_tokens":3,"completion_tokens":4}}`, `{"us\u0061ge":{"prompt_tokens":3,"completion_tokens":4}}`,
	`{"usage":null}`, `{"usage":5}`, `{"usage":[1]}`, `{"usage":"x"}`, `{"usage":{"prompt_tokens":1,}}`, `{"usage":{"prompt_tokens":-1}}`,
	`{"usage":{"prompt_tokens":1,"completion_tokens":2,"x":"` + strings.Repeat("a", maxUsageValue) + `"}}`,
	`{"usage":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat("}", 70) + `}`,
	`{"service_tier":"priority","Service_Tier":"flex"}`, `{"service_tier":"priority"}`, `{"service_tier":"` + strings.Repeat("p", 300) + `"}`,
	`{"service_tier":"priority","service_tier":"default"}`, `{"servic\u0065_tier":"priority"}`, `{"service_tier":["priority"]}`,
	`{"model":"a","model":"b"}`, `{"MODEL":"x","model":"y"}`, `{"model":"` + strings.Repeat("m", maxModelValue) + `"}`, `{"model":null}`, `{"mod\u0065l":"x"}`,
	`{"output":[{"type":"web_search_call"}],"Output":[]}`, `{"output":[{"type":"web_search_call"},{"type":"file_search_call"}]}`,
	`{"output":[{"type":"web_search_call"}],"usage":{"input_tokens":1,"output_tokens":2},"output":[]}`, `{"output":[1,]}`, `{"output":{}}`,
	`{"output":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	`{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `,"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
	`{"usage":{"prompt_tokens":1,"completion_tokens":2}}x`, `{"usage":{"prompt_tokens":1,"completion_tokens":2}} {}`,
	"\r\n {\"usage\" : {\"prompt_tokens\":1,\"completion_tokens\":2} , \"model\" :\t\"m\" }\n\n", `{"usage":{"prompt_tokens":1,"completion_tokens":2}`,
	`{"usage":{"prompt_tokens":1,"completion_tokens":2},}`, `{"usage":{"prompt_tokens":1,"completion_tokens":2} "model":"m"}`, `[]`, `"usage"`, ``, ` `,
}

// The scanner's one pass over an answer whole in its first read
// (readWhole) leaves what the lexer leaves, or declines and leaves the
// scanner as it was, over the edge cases, generated answers and bodies,
// and the sample answers, each followed by more to read.
func TestJSONUsageScannerReadsWholeAsItsLexer(t *testing.T) {
	bodies, _ := answerBodies(29, 3000)
	took := 0
	for _, body := range bodies {
		took += int(b2u(checkAnswerReadWhole(t, body)))
	}
	t.Logf("readWhole took %d of %d answers", took, len(bodies))
	assert.Greater(t, took, len(bodies)/2, "readWhole should take most answers")
}

func FuzzJSONUsageScannerReadsWholeAsItsLexer(f *testing.F) {
	for _, s := range slices.Concat(answerEdgeCases, []string{openAIJSON, anthropicJSON, string(benchAnswerShort)}) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkAnswerReadWhole(t, body) })
}

// checkAnswerReadWhole checks that a scanner whose first read is body,
// and whose next is one of a few, reads with readWhole what it reads with
// its lexer alone, or that readWhole declines body without changing the
// scanner; it reports whether readWhole took body.
func checkAnswerReadWhole(t *testing.T, body []byte) bool {
	t.Helper()
	var took bool
	for _, next := range []string{"", " \n", "x", "{}"} {
		var whole, lexed jsonUsageScanner
		whole.lex.objectOnly, lexed.lex.objectOnly = true, true
		if took = whole.readWhole(body); !took {
			require.Equal(t, jsonUsageScanner{lex: jsonLexer{objectOnly: true}}, whole, "declined %q", body)
			whole.write(body)
		}
		readText(&lexed.lex, &lexed.value.capture, body, &lexed)
		if took {
			require.Equal(t, lexDone, lexed.lex.state, "%q", body)
		}
		whole.write([]byte(next))
		lexed.write([]byte(next))
		require.Equal(t, lexed.lex.state, whole.lex.state, "%q then %q", body, next)
		u, ok := whole.result()
		lexedU, lexedOK := lexed.result()
		require.Equal(t, lexedU, u, "%q then %q", body, next)
		require.Equal(t, lexedOK, ok, "%q then %q", body, next)
		whole.lex, lexed.lex = jsonLexer{}, jsonLexer{}
		whole.value.lexed, lexed.value.lexed = false, false // which way it read, as the lexers
		require.Equal(t, lexed, whole, "%q then %q", body, next)
	}
	return took
}

// reset leaves a scanner the zero value, as jsonScanners hands it out,
// whatever the scanner read and however it came: whole in its first read
// (which reset clears in part) or in chunks its lexers read.
func TestJSONUsageScannerResetLeavesTheZeroValue(t *testing.T) {
	bodies, g := answerBodies(61, 2000)
	var s jsonUsageScanner
	for i, body := range bodies {
		cut := len(body)
		if i%3 == 1 && len(body) > 0 {
			cut = g.r.IntN(len(body))
		}
		s.write(body[:cut])
		s.write(body[cut:])
		s.result()
		s.reset()
		require.Equal(t, jsonUsageScanner{}, s, "%q cut at %d", body, cut)
	}
}

// answerBodies returns the edge cases, the sample answers, and n each of
// generated answers, structured answers and documents, from seed; and the
// generator, to go on with.
func answerBodies(seed uint64, n int) ([][]byte, *jsonGen) {
	var bodies [][]byte
	for _, s := range slices.Concat(answerEdgeCases, lexEdgeCases, []string{openAIJSON, anthropicJSON, benchAnswerSmall, benchAnswer1KiB, string(benchAnswerShort)}) {
		bodies = append(bodies, []byte(s))
	}
	g := newJSONGen(seed)
	for range n {
		bodies = append(bodies, g.randomAnswer(), g.structuredAnswer(), g.doc())
	}
	return bodies, g
}
