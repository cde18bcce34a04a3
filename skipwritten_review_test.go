package httpguard

// Adversarial tests of skipWritten, skipValue's reading of a choices value
// written in the compact one-choice form, and of the skipper it hands a
// message that goes on after its content: what fills the form's slots and
// what follows its content is drawn from near misses of both.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// writtenSlots are values for the content and finish reason slots: strings
// with escapes, raw control characters, invalid UTF-8, near misses of a
// string (another quote) and of null, and values of other kinds.
var writtenSlots = []string{
	`"hi"`, `""`, `"\""`, `"\\"`, `"\\\""`, `"\u0000"`, `"\u00"`, `"\u00zz"`, `"a\"`, "\"\x00\"", "\"\x1f\"", "\"\x7f\"",
	"\"\xff\xfe\"", "\"\xc3\"", `"\/"`, `"\x"`, `"\ud800"`, `"\uD83D\uDE00"`, "\"\xe2\x80\xa8\"", "\"a\tb\"", "\"\n\"",
	`"long long long long long long long long long long \" still"`, `"stop"`, `"stop`, `"sto"`,
	`'x'`, `'x"`, `"x'`, `null`, `nul`, `nulx`, `nul"`, `nullx`, `nulll`, `Null`, `n"`, `1`, `-1`, `0`, `true`, `false`, `{}`, `[]`, `{"a":1}`,
}

// writtenHeads are the form's head and near misses of it: another index,
// one written otherwise, the head cut short.
var writtenHeads = []string{
	choiceHead, choiceHead, choiceHead, `[{"index":1,"message":{"role":"assistant","content":`, `[{"index":00,"message":{"role":"assistant","content":`,
	`[{"index":0 ,"message":{"role":"assistant","content":`, `[{"index":0,"message":{"role":"assistant","content" :`,
	`[{"index":0,"message":{"role":"assistant","content":"a","content":`, choiceHead[:len(choiceHead)-1], choiceHead[:20],
}

// writtenGoesOn are the pieces of what may follow a content: the form's
// tails and end, and the tokens of a message that goes on (or breaks).
var writtenGoesOn = []string{
	`}`, `]`, `,`, `:`, ` `, "\n", "\t", `{`, `[`, `1`, `-0.5e+3`, `01`, `null`, `nul`, `true`, `"x"`, `"usage"`, `"\u0022"`, `"a\"b"`,
	`"finish_reason"`, `"stop"`, `"stop"}]`, `}]`, `}}]`, choiceTails[0], choiceTails[1], choiceTails[2], choiceStopEnd,
	`,"reasoning_content":`, `,"tool_calls":[{"id":"c"}]`, "\"\x01\"", "\"\xff\"", `}}`, `]]`, `,}`, `,]`, `x`,
}

// nearWrittenChoices returns a choices value in or near the written form.
func nearWrittenChoices(r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString(writtenHeads[r.IntN(len(writtenHeads))])
	b.WriteString(writtenSlots[r.IntN(len(writtenSlots))])
	if r.IntN(3) == 0 {
		b.WriteString(choiceTails[r.IntN(len(choiceTails))])
		b.WriteString(writtenSlots[r.IntN(len(writtenSlots))])
	}
	for range r.IntN(12) {
		b.WriteString(writtenGoesOn[r.IntN(len(writtenGoesOn))])
	}
	return b.Bytes()
}

// checkWrittenSkip checks that skipValue ends data where scanValue does,
// from its start cut at every byte and from each of its positions whole,
// and that what it takes is what encoding/json takes.
func checkWrittenSkip(t *testing.T, data []byte) {
	t.Helper()
	for cut := 0; cut <= len(data); cut++ {
		p := data[:cut]
		got := skipValue(p, 0)
		require.Equal(t, scanValue(p, 0, nil), got, "%q", p)
		if got > 0 {
			require.True(t, json.Valid(p[:got]), "skipValue took %q, which encoding/json refuses", p[:got])
		}
		shallow := bytes.Count(p, []byte("["))+bytes.Count(p, []byte("{")) <= 64 // skipValue leaves deeper values to the lexer
		if len(p) > 0 && (p[0] == '[' || p[0] == '{') && shallow && json.Valid(p) {
			require.Equal(t, len(bytes.TrimRight(p, " \t\r\n")), got, "encoding/json takes %q", p)
		}
	}
	for i := range data {
		require.Equal(t, scanValue(data, i, nil), skipValue(data, i), "%q at %d", data, i)
	}
}

// skipValue reads choices in and near the written form, cut anywhere, as
// scanValue and encoding/json do: its content and finish reason a near
// miss of a string or null, its message going on after its content in
// any way, valid or not.
func TestSkipValueReadsNearWrittenChoicesAsScanValueAndEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		checkWrittenSkip(t, nearWrittenChoices(r))
	}
}

// A message that goes on after its content is read on at its depth (3):
// as deep as skipValue goes, and one level deeper, which it leaves to the
// lexer.
func TestSkipValueReadsOnAMessageNestedToItsLimit(t *testing.T) {
	for _, n := range []int{60, 61, 62} {
		for _, open := range []string{"[", `{"a":`} {
			var b bytes.Buffer
			b.WriteString(choiceHead + `"a","x":`)
			for range n {
				b.WriteString(open)
			}
			b.WriteString("1")
			b.Write(bytes.Repeat([]byte{open[0] + 2}, n)) // '}' is '{'+2, ']' is '['+2
			b.WriteString(`},"finish_reason":"stop"}]`)
			require.Equal(t, scanValue(b.Bytes(), 0, nil), skipValue(b.Bytes(), 0), "%d %s", n, open)
		}
	}
}

func FuzzSkipValueReadsNearWrittenChoices(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		f.Add(nearWrittenChoices(r))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = data[:min(len(data), 1024)] // its checks take time quadratic in len(data)
		checkWrittenSkip(t, data)
		checkWrittenSkip(t, append([]byte(choiceHead), data...))
	})
}

// nearWrittenAnswer returns a chat answer whose choices are in or near the
// written form, some holding a usage in their message or choice, with a
// top-level usage before or after them (or none), broken now and then.
func nearWrittenAnswer(r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"x",`)
	if r.IntN(4) == 0 {
		b.WriteString(`"usage":{"prompt_tokens":3,"completion_tokens":4},`)
	}
	b.WriteString(`"choices":`)
	if r.IntN(3) == 0 {
		b.WriteString(choiceHead + writtenSlots[r.IntN(len(writtenSlots))] + []string{
			`,"usage":{"prompt_tokens":99,"completion_tokens":99}},"finish_reason":"stop"}]`,
			`},"usage":{"prompt_tokens":99,"completion_tokens":99},"finish_reason":"stop"}]`,
			`},"finish_reason":"stop","usage":{"prompt_tokens":99}}]`,
			`,"x":{"usage":{"prompt_tokens":99}}}}]`,
			`},"finish_reason":"stop"}],"usage":{"prompt_tokens":98,"completion_tokens":98}`,
		}[r.IntN(5)])
	} else {
		b.Write(nearWrittenChoices(r))
	}
	if r.IntN(5) != 0 {
		b.WriteString(`,"usage":{"prompt_tokens":10,"completion_tokens":20}`)
	}
	b.WriteString([]string{`}`, `}`, `} `, `}x`, ``}[r.IntN(5)])
	return b.Bytes()
}

// A JSON answer's scanner reads the usage of answers whose choices are in
// or near the written form as encoding/json does (never a usage in the
// choices), read whole, in random pieces, and in two cut anywhere; and
// its whole read leaves what its lexer leaves.
func TestJSONUsageScannerReadsNearWrittenChoicesAnswersAsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	g := newJSONGen(9)
	for range 10000 {
		body := nearWrittenAnswer(r)
		cut := r.IntN(len(body) + 1)
		checkAnswerUsage(t, body, [][]byte{body})
		checkAnswerUsage(t, body, splitRandomly(g, body))
		checkAnswerUsage(t, body, [][]byte{body[:cut], body[cut:]})
		checkAnswerReadWhole(t, body)
	}
}

func FuzzJSONUsageScannerReadsNearWrittenChoicesAnswers(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 60 {
		f.Add(nearWrittenAnswer(r), uint8(r.IntN(256)))
	}
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		var parts [][]byte
		for p := body; len(p) > 0; p = p[min(len(p), int(chunk)%17+1):] {
			parts = append(parts, p[:min(len(p), int(chunk)%17+1)])
		}
		cut := int(chunk) % (len(body) + 1)
		checkAnswerUsage(t, body, parts)
		checkAnswerUsage(t, body, [][]byte{body[:cut], body[cut:]})
		checkAnswerReadWhole(t, body)
	})
}

// A Budget charges an answer whose choices are in or near the written
// form, sent whole or flushed in pieces cut anywhere, what its provider
// bills: the usage encoding/json reads of it, or its reservation when
// encoding/json refuses it or finds no usage (or, for an answer broken
// after a top-level usage that costs more, that usage; never one in its
// choices).
func TestBudgetChargesNearWrittenChoicesAnswersWhatEncodingJSONReads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var bodies [][]byte
	for range 400 {
		bodies = append(bodies, nearWrittenAnswer(r))
	}
	const maxTokens = 50
	reqBody := chatBody("m", maxTokens)
	var billed, next atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		n := int(next.Add(1) - 1)
		body := bodies[n%len(bodies)]
		var a struct {
			Usage *struct {
				Prompt     *int64 `json:"prompt_tokens"`
				Completion *int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(body, &a) != nil || a.Usage == nil || a.Usage.Prompt == nil || a.Usage.Completion == nil {
			billed.Add(int64(reservation(reqBody, maxTokens)))
		} else {
			billed.Add(*a.Usage.Prompt*1000 + *a.Usage.Completion*2000)
		}
		w.Header().Set("Content-Type", "application/json")
		if n%2 == 0 {
			w.Write(body)
			return
		}
		f := w.(http.Flusher)
		cut := n / 2 % (len(body) + 1)
		w.Write(body[:cut])
		f.Flush()
		for i := cut; i < len(body); i += 5 {
			w.Write(body[i:min(i+5, len(body))])
			f.Flush()
		}
	})
	b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar})
	client := api.client(t, b)
	for i := range 2 * len(bodies) {
		spent, wasBilled := b.Spent(), billed.Load()
		_, err := send(t, client, api.srv.URL, reqBody)
		require.NoError(t, err)
		body := bodies[i%len(bodies)]
		got, want := b.Spent()-spent, Money(billed.Load()-wasBilled)
		if json.Valid(body) || got == want {
			require.Equal(t, want, got, "%d: %q", i, body)
			continue
		}
		require.Equal(t, Money(98*1000+98*2000), got, "%d: %q", i, body)
		require.Contains(t, string(body), `}],"usage":{"prompt_tokens":98,`, "%d: the usage read is the top-level one", i)
	}
}
