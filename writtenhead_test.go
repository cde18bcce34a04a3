package httpguard

// Differential tests of writtenHead, readObject's reading of the members a
// chat answer begins with when written as providers write them: answers
// in and near that form (its pieces reordered, repeated, left out, in
// another case, escaped, spaced, their values near misses) are read by
// readObject with writtenHead as without it, cut anywhere, and as the
// lexer and encoding/json read them, whole and in pieces.

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// headMembers are members in and near writtenHead's form, by the key they
// stand for, each without the ',' after it.
var headMembers = [][]string{
	{`"id":"chatcmpl-1"`, `"id":"c1"`, `"id":""`, `"id":"a\"b"`, `"id":"\u0063"`, "\"id\":\"\x01\"", `"id":"x`, `"id":1`, `"id":null`,
		`"id" :"x"`, `"id": "x"`, `"Id":"x"`, `"i\u0064":"x"`, `"id":"` + strings.Repeat("x", 40) + `"`, `"id":{"a":1}`, `"id":"x" `},
	{`"object":"chat.completion"`, `"object":"chat.completion.chunk"`, `"object":"chat.completio"`, `"object":"chat.completion "`,
		`"object":"chat.completion`, `"object": "chat.completion"`, `"Object":"chat.completion"`, `"object":"chat.c\u006fmpletion"`, `"object":1`},
	{`"created":1700000000`, `"created":0`, `"created":01`, `"created":-1`, `"created":-0`, `"created":1.5`, `"created":1e3`, `"created":"1"`,
		`"created":-`, `"created":1 `, `"created":null`, `"Created":1`, `"created":` + strings.Repeat("9", 30)},
	{`"model":"gpt-4.1"`, `"model":"deepseek-v3.2"`, `"model":""`, `"model":"m\u006fdel"`, `"model":"a\\b"`, `"model":null`, `"model":1`,
		`"Model":"x"`, `"MODEL":"y"`, `"mod\u0065l":"y"`, `"model" :"x"`, `"model":"x`, "\"model\":\"\xff\"",
		`"model":"` + strings.Repeat("m", maxModelValue-2) + `"`, `"model":"` + strings.Repeat("m", maxModelValue-1) + `"`},
	{`"choices":[]`, `"choices":"x"`, `"choices":{"a":1}`, `"choices":null`, `"choices":[1,]`, `"Choices":[]`, `"choices" :[]`},
	{`"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}`, `"usage":{"prompt_tokens":1,"completion_tokens":2}`,
		`"usage":null`, `"Usage":{"prompt_tokens":3,"completion_tokens":4}`, `"usage":{"prompt_tokens":1,}`},
	{`"system_fingerprint":"fp_1"`, `"service_tier":"priority"`, `"service_tier":"default"`, `"Service_Tier":"priority"`,
		`"output":[{"type":"web_search_call"}]`, `"x":[[[]]]`},
}

// nearWrittenHeadAnswer returns an answer in or near writtenHead's form:
// most often its members in the providers' order, each the first of its
// list (the form) or another, with now and then a member left out,
// repeated or moved, space between them, or the object broken at its end.
func nearWrittenHeadAnswer(r *rand.Rand) []byte {
	var members []string
	for _, list := range headMembers {
		if r.IntN(8) == 0 {
			continue
		}
		m := list[0]
		if r.IntN(5) == 0 {
			m = list[r.IntN(len(list))]
		}
		if list[0] == headMembers[4][0] && r.IntN(2) == 0 {
			m = `"choices":` + string(nearWrittenChoices(r))
		}
		members = append(members, m)
		if r.IntN(10) == 0 { // repeated, or another of its kind after it
			members = append(members, list[r.IntN(len(list))])
		}
	}
	if len(members) > 1 && r.IntN(6) == 0 {
		i, j := r.IntN(len(members)), r.IntN(len(members))
		members[i], members[j] = members[j], members[i]
	}
	var b bytes.Buffer
	b.WriteString([]string{"{", "{", "{", " {", "{ "}[r.IntN(5)])
	for i, m := range members {
		if i > 0 {
			if r.IntN(16) == 0 {
				b.WriteString(" ")
			}
			if b.WriteString(","); r.IntN(12) == 0 {
				b.WriteString([]string{" ", "\n", ",", "\b"}[r.IntN(4)])
			}
		}
		b.WriteString(m)
	}
	b.WriteString([]string{"}", "}", "}", "}", "}", "}", "} ", ",}", "}x", ""}[r.IntN(10)])
	return b.Bytes()
}

// checkWrittenHead checks that readObject reads body with writtenHead as
// it reads it without: the same result and, when it took body, the same
// scanner.
func checkWrittenHead(t *testing.T, body []byte) {
	t.Helper()
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return
	}
	var head, general jsonUsageScanner
	head.lex.objectOnly, general.lex.objectOnly = true, true
	ok := head.readObject(body, i, true)
	require.Equal(t, general.readObject(body, i, false), ok, "%q", body)
	if ok {
		require.Equal(t, general, head, "%q", body)
	}
}

// readObject reads answers in and near writtenHead's form, cut at every
// byte, with writtenHead as without it; and the scanner reads them as its
// lexer and encoding/json do, whole, in random pieces and cut in two.
func TestWrittenHeadReadsAsReadObject(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	g := newJSONGen(73)
	took := 0
	for n := range 6000 {
		body := nearWrittenHeadAnswer(r)
		checkWrittenHead(t, body)
		if n%10 == 0 {
			for cut := range len(body) {
				checkWrittenHead(t, body[:cut])
			}
		}
		took += int(b2u(checkAnswerReadWhole(t, body)))
		checkAnswerUsage(t, body, [][]byte{body})
		checkAnswerUsage(t, body, splitRandomly(g, body))
		cut := r.IntN(len(body) + 1)
		checkAnswerUsage(t, body, [][]byte{body[:cut], body[cut:]})
	}
	t.Logf("readWhole took %d of 6000", took)
	require.Greater(t, took, 1000, "readWhole should take many of the answers")
}

// The sample answers, the edge cases and generated answers read with
// writtenHead as without it, cut at every byte.
func TestWrittenHeadReadsSampleAnswersAsReadObject(t *testing.T) {
	bodies, _ := answerBodies(74, 300)
	for _, body := range bodies {
		for cut := range len(body) + 1 {
			checkWrittenHead(t, body[:cut])
		}
	}
}

// An answer in the providers' form is read by writtenHead to its end,
// its usage included; one whose usage is written otherwise, up to it.
func TestWrittenHeadReadsTheProvidersForm(t *testing.T) {
	body := []byte(`{"id":"c1","object":"chat.completion","created":1700000000,"model":"deepseek-v3.2","choices":[],` +
		`"usage":{"prompt_tokens":9,"completion_tokens":7}}`)
	var s jsonUsageScanner
	next, ok := s.writtenHead(body, 1)
	require.Equal(t, -1, next)
	require.True(t, ok)
	require.Equal(t, modelReading{hashModel("deepseek-v3.2"), hashModel("deepseek-v3.2")}, s.model)
	u, _ := s.result()
	require.Equal(t, [2]int64{9, 7}, [2]int64{u.InputTokens, u.OutputTokens})

	s = jsonUsageScanner{}
	body = []byte(`{"id":"c1","object":"chat.completion","model":"m","choices":[],"usage":null}`)
	next, ok = s.writtenHead(body, 1)
	require.Equal(t, bytes.Index(body, []byte(`"usage"`)), next)
	require.True(t, ok)
	// The last member is the object's, not followed by ',': it is readObject's.
	next, _ = s.writtenHead([]byte(`{"id":"c1","object":"chat.completion"}`), 1)
	require.Equal(t, 1+len(`"id":"c1",`), next)
}

func FuzzWrittenHeadReadsAsReadObject(f *testing.F) {
	r := rand.New(rand.NewPCG(75, 76))
	for range 60 {
		f.Add(nearWrittenHeadAnswer(r), uint8(r.IntN(256)))
	}
	f.Add([]byte(benchAnswerShort), uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		body = body[:min(len(body), 2048)] // cut at every byte: quadratic
		for cut := range len(body) + 1 {
			checkWrittenHead(t, body[:cut])
		}
		var parts [][]byte
		for p := body; len(p) > 0; p = p[min(len(p), int(chunk)%17+1):] {
			parts = append(parts, p[:min(len(p), int(chunk)%17+1)])
		}
		checkAnswerReadWhole(t, body)
		checkAnswerUsage(t, body, parts)
	})
}

// A writtenPiece matches itself and nothing that differs from it in one
// byte, at every length it takes, 8 bytes (a word) to 32 included, and
// wants the bytes after it it is asked for; it is made of no other length.
func TestWrittenPieceMatchesItsBytesAtEveryLength(t *testing.T) {
	for n := 8; n <= 32; n++ {
		piece := []byte(`"abcdefghijklmnopqrstuvwxyz012345`[:n])
		w := newWrittenPiece(string(piece))
		require.True(t, w.at(piece, 0, 0), "a piece of %d bytes", n)
		require.False(t, w.at(piece, 0, 1), "a piece of %d bytes, with nothing after it", n)
		p := append(append([]byte{}, piece...), '1')
		require.True(t, w.at(p, 0, 1), "a piece of %d bytes, with a byte after it", n)
		for i := range n {
			q := bytes.Clone(p)
			q[i] ^= 0x20
			require.False(t, w.at(q, 0, 0), "a piece of %d bytes, byte %d changed", n, i)
		}
	}
	require.Panics(t, func() { newWrittenPiece(`"abcdef`) })
	require.Panics(t, func() { newWrittenPiece(`"abcdefghijklmnopqrstuvwxyz0123456`) })
}
