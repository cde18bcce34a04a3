package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jsonGen writes random JSON, meant to find where this package's reader and
// encoding/json part: objects whose keys repeat, differ in case (also by
// Unicode folding: K for k, ſ for s), and are written with escapes; every
// form of number; strings with escapes, surrogates and invalid UTF-8;
// random whitespace; and, when broken is set, one random corruption.
type jsonGen struct {
	r    *rand.Rand
	keys []string // the keys objects draw from, most of the time
}

// genKeys are the keys the parsers read, and a few they do not.
var genKeys = []string{
	"model", "stream", "stream_options", "include_usage", "max_tokens", "max_completion_tokens",
	"max_output_tokens", "n", "best_of", "messages", "system", "prompt", "input", "tools",
	"anthropic_version", "stop_sequences", "content", "type", "image_url", "input_image",
	"usage", "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens",
	"prompt_cache_hit_tokens", "input_tokens", "output_tokens", "input_tokens_details",
	"cache_read_input_tokens", "cache_creation_input_tokens", "choices", "error", "message",
	"temperature", "id",
}

func newJSONGen(seed uint64) *jsonGen {
	return &jsonGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), keys: genKeys}
}

// object writes a random object of at most depth levels.
func (g *jsonGen) object(b *bytes.Buffer, depth int) {
	b.WriteByte('{')
	n := g.r.IntN(6)
	for i := range n {
		if i > 0 {
			g.space(b)
			b.WriteByte(',')
		}
		g.space(b)
		g.key(b)
		g.space(b)
		b.WriteByte(':')
		g.space(b)
		g.value(b, depth-1)
		g.space(b)
	}
	if n == 0 {
		g.space(b)
	}
	b.WriteByte('}')
}

func (g *jsonGen) value(b *bytes.Buffer, depth int) {
	k := g.r.IntN(10)
	if depth <= 0 {
		k = g.r.IntN(6)
	}
	switch k {
	case 0, 1:
		g.number(b)
	case 2:
		g.string(b, g.word())
	case 3:
		b.WriteString([]string{"true", "false", "null", "null"}[g.r.IntN(4)])
	case 4:
		b.WriteString("null")
	case 5:
		b.WriteString([]string{`[]`, `[ ]`, `{}`, `""`, `"image"`, `"x_image"`}[g.r.IntN(6)])
	case 6, 7:
		g.object(b, depth)
	default:
		g.array(b, g.r.IntN(4), func(b *bytes.Buffer) { g.value(b, depth-1) })
	}
}

// key writes a key from g.keys, often in another spelling.
func (g *jsonGen) key(b *bytes.Buffer) {
	k := g.keys[g.r.IntN(len(g.keys))]
	if g.r.IntN(8) == 0 {
		k = g.word()
	}
	switch g.r.IntN(12) {
	case 0: // another case
		if rs := []rune(k); len(rs) > 0 {
			i := g.r.IntN(len(rs))
			rs[i] = []rune(strings.ToUpper(string(rs[i])))[0]
			k = string(rs)
		}
	case 1: // Unicode folding
		k = strings.NewReplacer("k", "\u212a", "s", "\u017f").Replace(k)
	case 2: // a near miss
		k += []string{"\n", " ", "_", "\u0000"}[g.r.IntN(4)]
	case 3: // escaped
		b.WriteByte('"')
		for _, c := range k {
			if g.r.IntN(2) == 0 {
				fmt.Fprintf(b, `\u%04[1]x`, c)
				continue
			}
			g.char(b, c)
		}
		b.WriteByte('"')
		return
	}
	g.string(b, k)
}

func (g *jsonGen) string(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, c := range s {
		g.char(b, c)
	}
	b.WriteByte('"')
}

func (g *jsonGen) char(b *bytes.Buffer, c rune) {
	switch {
	case c == '"' || c == '\\':
		b.WriteByte('\\')
		b.WriteRune(c)
	case c < 0x20:
		fmt.Fprintf(b, `\u%04x`, c)
	case c > 0xffff && g.r.IntN(2) == 0: // a surrogate pair
		fmt.Fprintf(b, `\u%04X\u%04x`, 0xd800+(c-0x10000)>>10, 0xdc00+(c-0x10000)&0x3ff)
	default:
		b.WriteRune(c)
	}
}

// word is a random string of text, escapes and odd characters.
func (g *jsonGen) word() string {
	parts := []string{"a", "image", "_image", "é", "你", "😀", "\n", "\"", "\\", "/", "\t", "K", "ſ", "usage", "\x7f"}
	var sb strings.Builder
	for range g.r.IntN(5) {
		sb.WriteString(parts[g.r.IntN(len(parts))])
	}
	return sb.String()
}

func (g *jsonGen) number(b *bytes.Buffer) {
	forms := []string{"0", "-0", "1", "7", "-3", "10", "4096", "2.5", "0.0001", "1e3", "1E+2", "15e-1", "-1.5e-3",
		"999999999", "1000000000", "1000000001", "12345678901234567890", "1e400", "0e5", "100e-2", "3.0", "0.5e1"}
	b.WriteString(forms[g.r.IntN(len(forms))])
}

func (g *jsonGen) space(b *bytes.Buffer) {
	if g.r.IntN(3) == 0 {
		b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[g.r.IntN(4)])
	}
}

// corrupt breaks data in one random place, or makes it an oddity: invalid
// UTF-8, a raw control character, a bad escape, a cut.
func (g *jsonGen) corrupt(data []byte) []byte {
	if len(data) == 0 {
		return data
	}
	i := g.r.IntN(len(data))
	junk := []string{"\xff", "\x01", `\x`, `\u12`, `\ud800`, `\udc00\ud800`, ",", "}", "]", ":", `"`, "01", "-", ".5", "tru", " "}
	switch g.r.IntN(3) {
	case 0:
		return data[:i]
	case 1:
		return append(data[:i:i], data[i+1:]...)
	}
	return append(append(data[:i:i], junk[g.r.IntN(len(junk))]...), data[i:]...)
}

// array writes an array of n elements, each written by elem, with
// whitespace around each.
func (g *jsonGen) array(b *bytes.Buffer, n int, elem func(*bytes.Buffer)) {
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		g.space(b)
		elem(b)
		g.space(b)
	}
	b.WriteByte(']')
}

// doc returns a random top-level object, broken one time in four.
func (g *jsonGen) doc() []byte {
	var b bytes.Buffer
	g.space(&b)
	g.object(&b, 3)
	g.space(&b)
	if g.r.IntN(4) == 0 {
		return g.corrupt(b.Bytes())
	}
	return b.Bytes()
}

func TestJSONValidAgreesWithEncodingJSONOnGeneratedInput(t *testing.T) {
	g := newJSONGen(1)
	for range 5000 {
		data := g.doc()
		require.Equal(t, json.Valid(data), jsonValid(data), "%q", data)
	}
}

func TestJSONValidAgreesWithEncodingJSONOnEdgeCases(t *testing.T) {
	for _, s := range []string{
		``, ` `, `0`, `-`, `-0`, `01`, `1.`, `1.e3`, `1e`, `1e+`, `.5`, `1x`, `true`, `truex`, `nul`, `"\u00"`,
		`"\ud800"`, "\"\xff\"", `"a` + "\x7f" + `"`, "\"\t\"", `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `[}`, `{]`,
		`[[[]]]`, ` {"a":[1,-0.5e+3,true,null,"\u00e9\n"]} `, `{} {}`, `{}x`, strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
	} {
		assert.Equal(t, json.Valid([]byte(s)), jsonValid([]byte(s)), "%.40q", s)
	}
}

// member is one member of an object, key decoded.
type member struct{ key, value string }

// referenceMembers lists an object's members with encoding/json.
func referenceMembers(t *testing.T, data []byte) []member {
	dec := json.NewDecoder(bytes.NewReader(data))
	_, err := dec.Token()
	require.NoError(t, err)
	var ms []member
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		ms = append(ms, member{k.(string), string(v)})
	}
	return ms
}

func TestJSONMembersReadsWhatEncodingJSONReads(t *testing.T) {
	g := newJSONGen(2)
	for range 2000 {
		data := g.doc()
		var got []member
		err := jsonMembers(data, func(k []byte, _ bool, v []byte) error {
			got = append(got, member{string(appendUnquoted(nil, k)), string(v)})
			return nil
		})
		if !json.Valid(data) {
			require.ErrorIs(t, err, errJSONSyntax, "%q", data)
			continue
		}
		require.NoError(t, err, "%q", data)
		assert.Equal(t, referenceMembers(t, data), got, "%q", data)
		checkValidWalkers(t, bytes.TrimSpace(data), got)
	}
}

func TestMatchNameDecodesEscapesAndFoldsCaseAsEncodingJSON(t *testing.T) {
	tests := []struct {
		key  string // raw, as in the JSON text
		want nameMatch
	}{
		{`usage`, exactMatch},
		{`\u0075sage`, exactMatch},
		{`\u0075\u0073\u0061\u0067\u0065`, exactMatch},
		{`u\u0073age`, exactMatch},
		{`Usage`, foldMatch},
		{`USAGE`, foldMatch},
		{`u\u017fage`, foldMatch},
		{"u\u017fage", foldMatch},
		{`usage\n`, noMatch},
		{`usage `, noMatch},
		{`usag`, noMatch},
		{`usages`, noMatch},
		{`usa\u0000ge`, noMatch},
		{"us\xffage", noMatch},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, matchName([]byte(tt.key), strings.Contains(tt.key, `\`), "usage"), tt.key)
	}
	assert.Equal(t, foldMatch, matchName([]byte("max_to\u212aens"), false, "max_tokens"), "Kelvin sign")
	assert.Equal(t, foldMatch, matchName([]byte(`max_to\u212Aens`), true, "max_tokens"), "escaped Kelvin sign")
}

// matchesLikeEncodingJSON reports how encoding/json matches key (raw JSON
// string content) to a field named name: a map has it under that name, or
// a struct field takes it by bytes.EqualFold, as encoding/json documents.
func matchesLikeEncodingJSON(t *testing.T, key, name string) nameMatch {
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(`{"`+key+`":1}`), &m))
	for k := range m {
		switch {
		case k == name:
			return exactMatch
		case bytes.EqualFold([]byte(k), []byte(name)):
			return foldMatch
		}
	}
	return noMatch
}

func TestMatchNameAgreesWithEncodingJSONOnGeneratedKeys(t *testing.T) {
	g := newJSONGen(3)
	for range 2000 {
		var b bytes.Buffer
		g.key(&b)
		raw := b.Bytes()[1 : b.Len()-1]
		escaped := bytes.IndexByte(raw, '\\') >= 0
		for _, name := range []string{"usage", "max_tokens", "stream_options", "n"} {
			want := matchesLikeEncodingJSON(t, string(raw), name)
			require.Equal(t, want, matchName(raw, escaped, name), "%q vs %s", raw, name)
			i, m := lookupName(raw, escaped, []string{"x", name})
			require.Equal(t, want, m, "%q vs %s", raw, name)
			if m != noMatch {
				require.Equal(t, 1, i)
			}
		}
	}
}

func TestMatchNameFoldsAsEncodingJSONMatchesStructFields(t *testing.T) {
	// encoding/json's struct field matching, which the fold rule stands for.
	for _, key := range []string{"MAX_TOKENS", "max_to\u212aens", `max_to\u212aens`, "Max_Tokens", "max_tokenſ", "max_tokens_"} {
		var v struct {
			MaxTokens *int `json:"max_tokens"`
		}
		require.NoError(t, json.Unmarshal([]byte(`{"`+key+`":5}`), &v))
		m := matchName([]byte(key), strings.Contains(key, `\`), "max_tokens")
		assert.Equal(t, v.MaxTokens != nil, m != noMatch, key)
	}
}

func TestUnquotingAgreesWithEncodingJSON(t *testing.T) {
	g := newJSONGen(4)
	odd := []string{`\ud83d\ude00`, `\ud83d`, `\ude00`, `\ud83d\u0041`, `\ud83dx`, "\xff", "\xc3", `\/`, `\b\f\n\r\t`, `\u00E9`, "\xed\xa0\x80"}
	for i := range 5000 {
		var s string
		if i < len(odd) {
			s = `"` + odd[i] + `"`
		} else {
			var b bytes.Buffer
			g.string(&b, g.word()+string(rune(g.r.IntN(0x10ffff))))
			s = b.String()
			if g.r.IntN(4) == 0 {
				s = `"` + odd[g.r.IntN(len(odd))] + s[1:]
			}
		}
		var want string
		if json.Unmarshal([]byte(s), &want) != nil {
			continue
		}
		got, ok := jsonString([]byte(s))
		require.True(t, ok, s)
		require.Equal(t, want, got, "%q", s)
	}
}

// lexEvents lists the events and spans a lexer reports over data fed in
// the given chunk sizes.
func lexEvents(data []byte, sizes []int) []string {
	var l jsonLexer
	l.objectOnly = true
	var out []string
	var value []byte
	for len(data) > 0 {
		n := len(data)
		if len(sizes) > 0 {
			n, sizes = min(sizes[0], n), sizes[1:]
		}
		chunk := data[:n]
		data = data[n:]
		l.feed(chunk)
	loop:
		for {
			switch ev := l.next(); ev {
			case evKey:
				k, _ := l.key()
				if k == nil || len(k) > maxLexedKey {
					k = []byte("(long)") // spanning reads, not kept
				}
				out = append(out, "key "+string(k))
			case evMember:
				value = append(value, chunk[l.valStart:l.pos]...)
				out = append(out, "value "+string(value))
				value = value[:0]
			case evMore:
				if start, ok := l.memberStart(); ok {
					value = append(value, chunk[start:]...)
				}
				break loop
			case evError:
				return append(out, "error")
			default:
				out = append(out, fmt.Sprint(ev))
			}
		}
	}
	return append(out, fmt.Sprint(l.end()))
}

func TestJSONLexerReadsTheSameWhateverTheChunks(t *testing.T) {
	g := newJSONGen(5)
	for range 1500 {
		data := g.doc()
		whole := lexEvents(data, nil)
		sizes := make([]int, len(data))
		for i := range sizes {
			sizes[i] = 1 + g.r.IntN(7)
		}
		require.Equal(t, whole, lexEvents(data, sizes), "%q", data)
	}
}

func FuzzJSONMembersAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{openAIJSON, anthropicJSON, `{"a":[1,-0.5e+3,true,null,"\u00e9\n"]}`, `{"a":01}`, `{"a":"\x"}`, `{}`, ` {"a":{}} `, `{"a" 1}`, "{\"a\":\"\x01\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []member
		err := jsonMembers(data, func(k []byte, _ bool, v []byte) error {
			got = append(got, member{string(appendUnquoted(nil, k)), string(v)})
			return nil
		})
		t0 := bytes.TrimLeft(data, " \t\r\n")
		want := json.Valid(data) && len(t0) > 0 && t0[0] == '{'
		if (err == nil) != want {
			t.Fatalf("jsonMembers(%q) = %v, json.Valid says %v", data, err, want)
		}
		if jsonValid(data) != json.Valid(data) {
			t.Fatalf("jsonValid(%q) = %v", data, !json.Valid(data))
		}
		if err == nil {
			if ref := referenceMembers(t, data); len(ref) != len(got) || (len(ref) > 0 && fmt.Sprint(ref) != fmt.Sprint(got)) {
				t.Fatalf("members of %q: %q, encoding/json reads %q", data, got, ref)
			}
			checkValidWalkers(t, bytes.TrimSpace(data), got)
		}
		whole := lexEvents(data, nil)
		if one := lexEvents(data, []int{1, 2, 3, 5, 7, 11, 13}); fmt.Sprint(one) != fmt.Sprint(whole) {
			t.Fatalf("chunked %q: %q, whole: %q", data, one, whole)
		}
	})
}

func TestIsASCIIFindsEveryByteAbove0x7f(t *testing.T) {
	for n := range 20 { // every length up to two words and more
		for c := range 256 {
			for pos := range n {
				b := []byte("abcdefghijklmnopqrst")[:n]
				b[pos] = byte(c)
				require.Equal(t, c < 0x80, isASCII(b), "byte %#x at %d of %d", c, pos, n)
			}
		}
		require.True(t, isASCII([]byte("abcdefghijklmnopqrst")[:n]))
	}
}

// plainRunByBytes is plainRun one byte at a time.
func plainRunByBytes(p []byte, i int) int {
	for ; i < len(p); i++ {
		if c := p[i]; c == '"' || c == '\\' || c < 0x20 {
			break
		}
	}
	return i
}

func TestPlainRunFindsTheFirstByteThatEndsARun(t *testing.T) {
	g := newJSONGen(11)
	filler := func(n int) []byte { // plain bytes, UTF-8 and others above 0x7f included
		p := make([]byte, n)
		for i := range p {
			for p[i] = byte(0x20 + g.r.IntN(0xe0)); p[i] == '"' || p[i] == '\\'; {
				p[i] = byte(0x20 + g.r.IntN(0xe0))
			}
		}
		return p
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 129, 143, 200, 511, 640, 700, 1300, 1600, 3200, 4100} {
		p := filler(n)
		require.Equal(t, n, plainRun(p, 0), "no special byte in %d", n)
		for c := range 256 {
			for _, k := range []int{0, n - 1, g.r.IntN(n + 1)} {
				if k < 0 || k >= n {
					continue
				}
				q := append([]byte(nil), p...)
				q[k] = byte(c)
				for _, i := range []int{0, k} {
					want := plainRunByBytes(q, i)
					require.Equal(t, want, plainRun(q, i), "byte %#x at %d of %d, from %d", c, k, n, i)
					require.Equal(t, want-i, specialIndex(q[i:]), "specialIndex: byte %#x at %d of %d, from %d", c, k, n, i)
					require.Equal(t, want-i, specialIndexGo(q[i:]), "specialIndexGo: byte %#x at %d of %d, from %d", c, k, n, i)
					if n-i >= 64 {
						require.Equal(t, specialMaskGo((*[64]byte)(q[i:])), specialMask((*[64]byte)(q[i:])), "specialMask: byte %#x at %d of %d, from %d", c, k, n, i)
					}
				}
				assert.Equal(t, min(firstControlByBytes(q), n), firstControl(q), "byte %#x at %d of %d", c, k, n)
			}
		}
	}
}

// FuzzSpecialIndex checks the assembly and Go searches against byte
// loops, at every offset of the input, so that each alignment and each
// length of tail is tried.
func FuzzSpecialIndex(f *testing.F) {
	f.Add([]byte(strings.Repeat("plain text é 你好 ", 8) + "\\n"))
	f.Add([]byte(strings.Repeat("x", 100) + "\x1f"))
	f.Add([]byte(strings.Repeat("y", 31) + `"`))
	f.Add([]byte(strings.Repeat(`a\"b\\c\u00e9\n`, 12) + "\x00\x7f\x80\xff \x1f!"))
	f.Fuzz(func(t *testing.T, p []byte) {
		for i := range min(len(p), 40) + 1 {
			want := plainRunByBytes(p, i) - i
			if got := specialIndex(p[i:]); got != want {
				t.Fatalf("specialIndex(p[%d:]) = %d, want %d", i, got, want)
			}
			if got := specialIndexGo(p[i:]); got != want {
				t.Fatalf("specialIndexGo(p[%d:]) = %d, want %d", i, got, want)
			}
			if len(p)-i >= 64 {
				block := (*[64]byte)(p[i:])
				if got, want := specialMask(block), specialMaskGo(block); got != want {
					t.Fatalf("specialMask(p[%d:]) = %#x, want %#x", i, got, want)
				}
			}
		}
	})
}

func firstControlByBytes(p []byte) int {
	for i, c := range p {
		if c < 0x20 {
			return i
		}
	}
	return len(p)
}

func TestClosingQuoteReadsStringContentAsTheLexerDoes(t *testing.T) {
	g := newJSONGen(12)
	for range 4000 {
		var b bytes.Buffer
		g.string(&b, g.word()+strings.Repeat(g.word(), g.r.IntN(40)))
		s := b.Bytes()
		if g.r.IntN(3) == 0 {
			s = g.corrupt(s)
		}
		if len(s) == 0 || s[0] != '"' {
			continue
		}
		q := closingQuote(s, 1)
		// The lexer's reading: the string ends at the first quote it
		// accepts as the end, or is not valid.
		want := -1
		for k := 1; k < len(s); k++ {
			if s[k] == '"' && jsonValid(s[:k+1]) {
				want = k
				break
			}
		}
		require.Equal(t, want, q, "%q", s)
	}
}

func TestWholeIntEndsNumbersAsTheLexerDoes(t *testing.T) {
	whole := []string{"0", "-0", "7", "-3", "10", "4096", "12345678901234567890"}
	forms := append([]string{"2.5", "1e3", "1E+2", "-1.5e-3", "01", "-", "-a", "00"}, whole...)
	for _, f := range forms {
		for _, after := range []string{",", "}", " ", "x", "", "5"} {
			p := []byte(f + after)
			j := wholeInt(p, 0)
			switch {
			case after == "": // it may go on in the next read: left to the lexer
				require.Zero(t, j, "%q", p)
			case after != "5" && slices.Contains(whole, f): // the fast path takes every whole integer
				require.Equal(t, len(f), j, "%q", p)
			case !slices.Contains(whole, f): // and nothing else
				require.Zero(t, j, "%q", p)
			}
			if j == 0 {
				continue
			}
			require.Equal(t, len(f), j, "%q", p)
			require.True(t, jsonValid(p[:j]), "%q", p)
			require.NotContains(t, f, ".")
		}
	}
}

// lexedEnd returns where the value at the start of p ends, read by the
// lexer a byte at a time (wantStrings turns skipContainer off), and its
// deepest nesting; -1 when p does not hold all of a valid value.
func lexedEnd(p []byte) (end, deepest int) {
	l := jsonLexer{wantStrings: true}
	l.feed(p)
	for {
		switch l.next() {
		case evEnd:
			return l.pos, nesting(p[:l.pos])
		case evMore, evError:
			return -1, 0
		}
	}
}

// nesting returns how deep the containers of v, valid JSON, nest.
func nesting(v []byte) (deepest int) {
	depth, inString := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == '{' || c == '['):
			depth++
			deepest = max(deepest, depth)
		case !inString && (c == '}' || c == ']'):
			depth--
		}
	}
	return deepest
}

func TestSkipContainerEndsValuesAsTheLexerDoes(t *testing.T) {
	g := newJSONGen(7)
	var inputs [][]byte
	for range 3000 {
		inputs = append(inputs, g.doc())
	}
	for _, s := range []string{`[]`, `{}`, `[ ]`, `{ }`, `[,]`, `[1,]`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{"a" 1}`, `{1:2}`, `[}`, `{]`,
		`[1 2]`, `["a" "b"]`, `[tru]`, `[truex]`, `[nul]`, `[-]`, `[01]`, `[1.]`, `[1e]`, `[1e+]`, `[.5]`, `[-0.5e+3]`, `["\u12"]`, `["\x"]`,
		"[\"\x01\"]", `[[[]]]`, strings.Repeat("[", 64) + strings.Repeat("]", 64), strings.Repeat("[", 65) + strings.Repeat("]", 65)} {
		inputs = append(inputs, []byte(s))
	}
	for _, data := range inputs {
		for i, c := range data {
			if c != '{' && c != '[' {
				continue
			}
			want, deepest := lexedEnd(data[i:])
			got := skipContainer(data, i)
			switch {
			case want < 0:
				require.Equal(t, -1, got, "%q at %d", data, i)
			case deepest > 64: // deeper than it goes: left to the lexer
				require.Equal(t, -1, got, "%q at %d", data, i)
			default:
				require.Equal(t, i+want, got, "%q at %d", data, i)
			}
			for cut := i + 1; cut < len(data) && cut < i+want; cut++ { // not whole: left to the lexer
				require.Equal(t, -1, skipContainer(data[:cut], i), "%q cut at %d", data, cut)
			}
		}
	}
}

// skipValue, scanValue's quicker form for the values an answer's reader
// skips, ends every value where scanValue does and refuses what it
// refuses, and shortQuoteEnd ends the strings it takes where quoteEnd
// does: from every position of generated documents and answers, the edge
// cases and the sample answers, whole and cut short.
func TestQuickSkipsReadAsScanValueAndQuoteEnd(t *testing.T) {
	g := newJSONGen(31)
	inputs := [][]byte{[]byte(strings.Repeat("[", 64) + strings.Repeat("]", 64)), []byte(strings.Repeat("[", 65) + strings.Repeat("]", 65)),
		[]byte(`[{"a":"` + strings.Repeat(`\\u`, 20) + `"},"` + strings.Repeat("x", 40) + `","\u00e9` + strings.Repeat("y", 30) + `\n"]`)}
	for _, s := range slices.Concat(lexEdgeCases, answerEdgeCases, []string{openAIJSON, anthropicJSON, benchAnswerSmall, benchAnswer1KiB, string(benchAnswerShort)}) {
		inputs = append(inputs, []byte(s))
	}
	for range 1000 {
		inputs = append(inputs, g.doc(), g.randomAnswer(), g.structuredAnswer())
	}
	short := 0
	for _, data := range inputs {
		short += checkQuickSkips(t, data)
	}
	assert.Greater(t, short, len(inputs), "shortQuoteEnd should take most short strings")
}

// skipWritten, skipValue's reading of the choices written as providers
// write them, ends each where scanValue does, and declines each it does
// not take whole (skipValue reads on from the content of a message that
// goes on after it, as scanValue does too): from every position of such
// values with every kind of value in their slots, whole, broken and cut
// short; and it takes most of them.
func TestSkipWrittenReadsAsScanValue(t *testing.T) {
	g := newJSONGen(47)
	taken, resumed := 0, 0
	for range 3000 {
		data := g.writtenChoices()
		switch end, contentEnd := skipWritten(data, 0); {
		case end > 0:
			taken++
		case contentEnd > 0:
			resumed++
		}
		for i := range data {
			if end, _ := skipWritten(data, i); end > 0 {
				require.Equal(t, scanValue(data, i, nil), end, "%q at %d", data, i)
			}
		}
		checkQuickSkips(t, data)
	}
	assert.Greater(t, taken, 600, "skipWritten should take the choices written as providers write them")
	assert.Greater(t, resumed, 500, "skipWritten should hand the skipper the messages that go on after their content")
}

// The pieces of written choices make valid JSON with a string or null in
// each slot, as with the finish reason "stop", and no tail begins another.
func TestWrittenChoicesAreJSON(t *testing.T) {
	for _, tail := range choiceTails {
		form := []string{choiceHead, tail, choiceEnd}
		for _, slot := range []string{`"x"`, `null`} {
			assert.True(t, json.Valid([]byte(strings.Join(form, slot))), "%q with %s", form, slot)
			assert.True(t, json.Valid([]byte(choiceHead+slot+tail+choiceStopEnd)), "%q with %s", form, slot)
		}
		for _, other := range choiceTails {
			assert.True(t, other == tail || !strings.HasPrefix(other, tail), "%q begins %q", other, tail)
		}
	}
}

// writtenChoices returns a choices value written as providers write one
// choice, with random values in its slots (most of them a string or
// null; its finish reason often "stop" or nearly), its index
// now and then another than 0, broken one time in four.
func (g *jsonGen) writtenChoices() []byte {
	var b bytes.Buffer
	head := choiceHead
	if g.r.IntN(8) == 0 {
		head = strings.Replace(head, `0`, []string{`1`, `00`, `-0`, `0.0`, ` 0`, `"0"`}[g.r.IntN(6)], 1)
	}
	pieces := []string{head, choiceTails[g.r.IntN(len(choiceTails))], choiceEnd}
	if g.r.IntN(3) == 0 { // a message that goes on after its content, or a choice otherwise written
		pieces = []string{head, otherChoiceEnds[g.r.IntN(len(otherChoiceEnds))]}
	}
	for k, piece := range pieces {
		if k == 2 && g.r.IntN(2) == 0 { // the finish reason
			b.WriteString([]string{`"stop"`, `"stop"`, `"length"`, `"stop `, `"stop\"`, `"sto`, `"stop\u0022`}[g.r.IntN(7)])
		} else if k > 0 {
			switch g.r.IntN(10) {
			case 0:
				g.value(&b, 2)
			case 1:
				g.number(&b)
			case 2:
				b.WriteString("null")
			default:
				g.string(&b, g.word())
			}
		}
		b.WriteString(piece)
	}
	if g.r.IntN(4) == 0 {
		return g.corrupt(b.Bytes())
	}
	return b.Bytes()
}

// otherChoiceEnds end choices otherwise than choiceTails do, after their
// content, valid or not.
var otherChoiceEnds = []string{
	`,"reasoning_content":"why"},"finish_reason":"stop"}]`,
	`,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]`,
	`}}]`, `}}, {"index":1}]`, ` },"finish_reason":"stop"}]`, `,"refusal":null},"logprobs":null,"finish_reason":"stop"}]`,
	`},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"stop"}]`,
	`,}}]`, `}]`, `}}}]`, `,"a":}}]`, `}}`, `,"x":[1,{"y":null}]}}]`,
}

func FuzzQuickSkipsReadAsScanValueAndQuoteEnd(f *testing.F) {
	for _, s := range slices.Concat(lexEdgeCases, []string{openAIJSON, anthropicJSON, string(benchAnswerShort), `[[{"a":[]},{}],"\u00e9\"",-0.5e+3,true]`}) {
		f.Add([]byte(s))
	}
	g := newJSONGen(53)
	for range 20 {
		f.Add(g.writtenChoices())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkQuickSkips(t, data[:min(len(data), 2048)]) // its checks take time quadratic in len(data)
	})
}

// checkQuickSkips checks that skipValue reads data as scanValue does, from
// each of its positions, and whole from its start when cut anywhere, that
// shortQuoteEnd, from each position, declines or finds quoteEnd's end of a
// plain string, and that nextByte finds skipSpace's byte (0 at the end); it
// returns how many strings shortQuoteEnd took.
func checkQuickSkips(t *testing.T, data []byte) (short int) {
	t.Helper()
	for i := range data {
		require.Equal(t, scanValue(data, i, nil), skipValue(data, i), "%q at %d", data, i)
		if end := shortQuoteEnd(data, i); end >= 0 {
			wantEnd, escaped := quoteEnd(data, i)
			require.Equal(t, wantEnd, end, "%q at %d", data, i)
			require.False(t, escaped, "%q at %d", data, i)
			short++
		}
		j, c := nextByte(data, i)
		require.Equal(t, skipSpace(data, i), j, "%q at %d", data, i)
		if j < len(data) {
			require.Equal(t, data[j], c, "%q at %d", data, i)
		} else {
			require.Zero(t, c, "%q at %d", data, i)
		}
	}
	for cut := range data {
		require.Equal(t, scanValue(data[:cut], 0, nil), skipValue(data[:cut], 0), "%q cut at %d", data, cut)
	}
	return short
}

func TestJSONLexerKeepsKeysThatSpanReadsUpToMaxLexedKey(t *testing.T) {
	for _, n := range []int{1, inlineKey - 1, inlineKey, inlineKey + 1, 100, maxLexedKey, maxLexedKey + 1, 300} {
		key := strings.Repeat(`\u0061`, n/6) + strings.Repeat("b", n%6)
		for _, size := range []int{1, 5, 47, 64} {
			got := lexEvents([]byte(`{"`+key+`":1}`), slices.Repeat([]int{size}, 400))
			want := "key " + key
			if len(key) > maxLexedKey {
				want = "key (long)"
			}
			require.Equal(t, want, got[0], "a key of %d bytes in reads of %d", len(key), size)
		}
	}
}

// jsonValid reports whether data is one valid JSON value, as json.Valid.
func jsonValid(data []byte) bool {
	var l jsonLexer
	l.feed(data)
	for {
		switch l.next() {
		case evMore:
			return l.end()
		case evError:
			return false
		}
	}
}

// checkValidWalkers checks validMembers against the members jsonMembers
// read from obj, valid JSON, and validElements against encoding/json on
// every array among them.
func checkValidWalkers(t *testing.T, obj []byte, want []member) {
	t.Helper()
	var got []member
	for k, v := range validMembers(obj) {
		got = append(got, member{string(appendUnquoted(nil, k)), string(v)})
		if v[0] != '[' {
			continue
		}
		var ref []json.RawMessage
		require.NoError(t, json.Unmarshal(v, &ref))
		var elems []json.RawMessage
		for e := range validElements(v) {
			elems = append(elems, e)
		}
		if fmt.Sprint(elems) != fmt.Sprint(ref) || len(elems) != len(ref) {
			t.Fatalf("validElements(%q) = %q, encoding/json reads %q", v, elems, ref)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != len(want) {
		t.Fatalf("validMembers(%q) = %q, jsonMembers reads %q", obj, got, want)
	}
}

// lexReading is how a reader drives the lexer, for lexTrace.
type lexReading struct {
	wantStrings bool
	mute        bool // mute every other member
	scan        bool // hand every member value off to scanValue, declining what it does not take
}

// lexTrace lists every event a lexer reports over data fed in chunks of
// the given sizes (all at once when none), driven as r says, with
// positions in data: what must not depend on whether a token is whole in a
// chunk (stepMembers, scanValue) or read a byte at a time (the steps).
func lexTrace(data []byte, sizes []int, r lexReading) []string {
	l := jsonLexer{objectOnly: true, wantStrings: r.wantStrings}
	var out []string
	str := func(start, end, depth int, escaped bool) string {
		if start < 0 { // began in an earlier chunk
			start = openingQuote(data, end)
		}
		return fmt.Sprintf("string %d:%d depth %d escaped %v", start, end, depth, escaped)
	}
	keys := 0
	for off, first := 0, true; first || off < len(data); first = false {
		n := len(data) - off
		if len(sizes) > 0 {
			n, sizes = min(sizes[0], n), sizes[1:]
		}
		chunk := data[off : off+n]
		l.feed(chunk)
	read:
		for {
			ev := l.next()
			line := fmt.Sprintf("%d at %d depth %d", ev, off+l.pos, l.depth)
			switch ev {
			case evKey:
				k, escaped := l.key()
				line += fmt.Sprintf(" key %q %v", k, escaped)
				keys++
				l.muteMember, l.handOff = r.mute && keys%2 == 0, r.scan
			case evString:
				start := l.strStart
				if start >= 0 {
					start += off
				}
				line = str(start, off+l.pos, l.depth, l.strEscaped)
			case evValue:
				var strs []string
				end := scanValue(chunk, l.pos, func(start, end, depth int, escaped bool) {
					if r.wantStrings {
						strs = append(strs, str(off+start, off+end, depth+1, escaped))
					}
				})
				out = append(out, line)
				if end < 0 {
					l.decline()
					continue
				}
				out = append(out, strs...)
				l.resume(end)
				continue
			case evMore:
				off += n
				break read
			case evError:
				return append(out, line)
			}
			out = append(out, line)
		}
	}
	return append(out, fmt.Sprint(l.end()))
}

// openingQuote returns where the string that ends at data[end-1], valid
// JSON, opens.
func openingQuote(data []byte, end int) int {
	for i := end - 2; i >= 0; i-- {
		if data[i] != '"' {
			continue
		}
		backslashes := 0
		for j := i - 1; j >= 0 && data[j] == '\\'; j-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return i
		}
	}
	return -1
}

// lexEdgeCases are inputs at the edges of what the fast paths take.
var lexEdgeCases = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":1,}`, `{"a" :1}`, `{"a": 1 , "b" : "x" }`, `{"a":1 "b":2}`, `{"a"1}`, `{"a":}`, `{,}`, `{"a":1,,"b":2}`,
	`{"a":"\u00e9","\n":"\ud83d\ude00"}`, `{"a\"b":"c\\"}`, `{"a":"\x"}`, `{"a":"\u12x4"}`, "{\"a\":\"\x01\"}", "{\"a\x1f\":1}", "{\"\xff\":\"\xfe\"}",
	`{"a":-}`, `{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":-0,"b":0.5e-3,"c":1E+9}`, `{"a":tru}`, `{"a":truex}`, `{"a":null,"b":false,"c":true}`,
	`{"a":[],"b":{},"c":[{}],"d":{"e":[]}}`, `{"a":[1,]}`, `{"a":{"b"}}`, `{"a":[}`, `{"a":{]}`, `{"a":1}}`, `{"a":1}x`, `{"a":1} {}`, `[{"a":1}]`,
	`{"a":` + strings.Repeat("[", 64) + `"image"` + strings.Repeat("]", 64) + `}`,
	`{"a":` + strings.Repeat("[", 65) + `"image"` + strings.Repeat("]", 65) + `}`,
	`{"a":` + strings.Repeat(`{"b":`, 70) + `"\u0069mage"` + strings.Repeat("}", 70) + `,"c":"d"}`,
	`{"a":"` + strings.Repeat("x", 300) + `\"` + strings.Repeat("é", 100) + `"}`,
}

func TestJSONLexerFastPathsReportWhatTheStepsReport(t *testing.T) {
	g := newJSONGen(11)
	var inputs [][]byte
	for _, s := range lexEdgeCases {
		inputs = append(inputs, []byte(s))
	}
	for range 2000 {
		inputs = append(inputs, g.doc())
	}
	ones := slices.Repeat([]int{1}, 1<<14) // no token whole but ',' ':' '{' '}'
	for _, data := range inputs {
		for _, r := range []lexReading{{}, {wantStrings: true}, {mute: true}, {wantStrings: true, scan: true}, {scan: true, mute: true}} {
			whole := lexTrace(data, nil, r)
			require.Equal(t, lexTrace(data, ones[:len(data)], r), whole, "%+v %q", r, data)
			sizes := make([]int, len(data))
			for i := range sizes {
				sizes[i] = 1 + g.r.IntN(40)
			}
			require.Equal(t, whole, lexTrace(data, sizes, r), "%+v %q in reads of %v", r, data, sizes)
		}
	}
}

// refQuoteEnd is quoteEnd one byte at a time.
func refQuoteEnd(p []byte, i int) (int, bool) {
	escaped := false
	for i < len(p) {
		c := p[i]
		switch {
		case c == '"':
			return i, escaped
		case c < 0x20:
			return -1, false
		case c == '\\':
			n := escapeLen(p[i:])
			if n == 0 {
				return -1, false
			}
			escaped = true
			i += n
		default:
			i++
		}
	}
	return -1, false
}

// quoteEndPieces are what may come around a 64-byte block's edge in a
// string: escapes whole, cut or invalid, control bytes, quotes.
var quoteEndPieces = []string{`\n`, `\"`, `\\`, `\/`, `\u00e9`, `\uD83D`, `\u12`, `\x`, "\x01", "\x1f", `"`, `\`, `\u`, `\uzzzz`, `\\"`, `\\\"`, "é", "\x7f"}

// TestQuoteEndReadsEscapesAcrossBlocks puts each piece and a second one at
// every position around the edges of escapedQuoteEnd's 64-byte blocks,
// from several offsets, and compares quoteEnd and escapedQuoteEnd with a
// byte loop, and the string's validity with encoding/json.
func TestQuoteEndReadsEscapesAcrossBlocks(t *testing.T) {
	for off := 0; off < 3; off++ {
		for _, n := range []int{70, 135} {
			for pos := 52; pos < n; pos++ {
				for _, a := range quoteEndPieces {
					for _, b := range []string{"", `\n`, `\u0041`, `"`, "\x02", `\`} {
						buf := make([]byte, 0, n+16)
						for len(buf) < off {
							buf = append(buf, ' ')
						}
						for len(buf) < off+pos {
							buf = append(buf, 'a')
						}
						buf = append(buf, a...)
						buf = append(buf, b...)
						for len(buf) < off+n {
							buf = append(buf, 'b')
						}
						for _, tail := range []string{`"`, ``, `\`, `\"`} {
							p := append(append([]byte(nil), buf...), tail...)
							we, wesc := refQuoteEnd(p, off)
							ge, gesc := quoteEnd(p, off)
							if we != ge || (we >= 0 && wesc != gesc) {
								t.Fatalf("quoteEnd(%q, %d) = %d, %v; want %d, %v", p, off, ge, gesc, we, wesc)
							}
							// escapedQuoteEnd from the first special byte.
							s := off + specialIndexGo(p[off:])
							ee, eesc := escapedQuoteEnd(p, s)
							we2, wesc2 := refQuoteEnd(p, s)
							if ee != we2 || (ee >= 0 && eesc != wesc2) {
								t.Fatalf("escapedQuoteEnd(%q, %d) = %d, %v; want %d, %v", p, s, ee, eesc, we2, wesc2)
							}
							// Against encoding/json: a string literal is valid where quoteEnd finds its end.
							lit := append([]byte{'"'}, p[off:]...)
							if ge >= 0 {
								lit = lit[:ge-off+2]
							}
							var str string
							valid := json.Unmarshal(lit, &str) == nil
							if valid != (ge >= 0) {
								t.Fatalf("%q: encoding/json valid %v, quoteEnd %d", lit, valid, ge)
							}
						}
					}
				}
			}
		}
	}
}

// FuzzQuoteEnd compares quoteEnd, and escapedQuoteEnd from each backslash
// or control byte, with a byte loop.
func FuzzQuoteEnd(f *testing.F) {
	f.Add([]byte(`aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u00e9bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"ccc"`), 0)
	f.Fuzz(func(t *testing.T, p []byte, off int) {
		if off < 0 || off > len(p) {
			return
		}
		we, wesc := refQuoteEnd(p, off)
		ge, gesc := quoteEnd(p, off)
		if we != ge || (we >= 0 && wesc != gesc) {
			t.Fatalf("quoteEnd(%q, %d) = %d, %v; want %d, %v", p, off, ge, gesc, we, wesc)
		}
		for i := off; i < len(p) && i < off+70; i++ {
			if p[i] == '\\' || p[i] < 0x20 {
				ee, eesc := escapedQuoteEnd(p, i)
				we2, wesc2 := refQuoteEnd(p, i)
				if ee != we2 || (ee >= 0 && eesc != wesc2) {
					t.Fatalf("escapedQuoteEnd(%q, %d) = %d, %v; want %d, %v", p, i, ee, eesc, we2, wesc2)
				}
			}
		}
	})
}

// scanValue is the plain reader of a value that the quicker scanners
// (skipValue, scanImages, scanInput) are checked against: skipContainer
// for any value at p[i], object, array or other, that gives each string
// in it, keys and values, to s (when not nil): what a lexer with
// wantStrings reports, in the same order, when it reads the value (see
// handOff). The string is p[start:end] with its quotes, escaped says it
// holds a backslash escape, and depth is how deep it is nested in the
// value (0: it is the value; 1: in the value's container, and so on).
func scanValue(p []byte, i int, s func(start, end, depth int, escaped bool)) int {
	var objects uint64 // bit d: the container at depth d+1 is an object
	depth := 0
	for {
		// A value, at p[i] after whitespace.
		if i = skipSpace(p, i); i >= len(p) {
			return -1
		}
		switch c := p[i]; {
		case c == '"':
			end, escaped := quoteEnd(p, i+1)
			if end < 0 {
				return -1
			}
			if s != nil {
				s(i, end+1, depth, escaped)
			}
			i = end + 1
		case c == '{' || c == '[':
			if depth == 64 {
				return -1
			}
			objects = objects&^(1<<depth) | b2u(c == '{')<<depth
			depth++
			if i = skipSpace(p, i+1); i >= len(p) {
				return -1
			}
			if c == '{' && p[i] == '}' || c == '[' && p[i] == ']' { // empty
				i++
				depth--
				break
			}
			if c == '{' {
				if i = scanKey(p, i, depth, s); i < 0 {
					return -1
				}
			}
			continue
		case c == '-' || '0' <= c && c <= '9':
			if i = numberEnd(p, i); i < 0 {
				return -1
			}
		case c == 't' || c == 'f' || c == 'n':
			lit := jsonLiterals[b2u(c == 'f')+2*b2u(c == 'n')]
			if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
				return -1
			}
			i += len(lit)
		default:
			return -1
		}
		// A value ended at p[i]: what follows it, up to the next value.
		for {
			if depth == 0 {
				return i
			}
			if i = skipSpace(p, i); i >= len(p) {
				return -1
			}
			obj := objects>>(depth-1)&1 == 1
			if c := p[i]; c == '}' && obj || c == ']' && !obj {
				i++
				depth--
				continue
			} else if c != ',' {
				return -1
			}
			if i++; obj {
				if i = scanKey(p, i, depth, s); i < 0 {
					return -1
				}
			}
			break
		}
	}
}

// scanKey reads, for scanValue, the key at p[i] (after whitespace) of an
// object depth deep, and its colon: it gives the key to s (when not nil)
// and returns where its value starts (before whitespace), or -1 when p
// does not hold them whole and valid.
func scanKey(p []byte, i, depth int, s func(start, end, depth int, escaped bool)) int {
	if i = skipSpace(p, i); i >= len(p) || p[i] != '"' {
		return -1
	}
	end, escaped := quoteEnd(p, i+1)
	if end < 0 {
		return -1
	}
	if s != nil {
		s(i, end+1, depth, escaped)
	}
	if i = skipSpace(p, end+1); i >= len(p) || p[i] != ':' {
		return -1
	}
	return i + 1
}
