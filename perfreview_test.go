package httpguard

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Line shapes the byte-wise steps treat specially, mixed with repeated data
// lines, in streams split at random points: stepLines must read them as
// the steps do.
var oddLines = []string{
	"data\n", "data\r\n", "data", "dat\n", "d\n", "da:x\n", "datax: {}\n", "data :{}\n", "d:{}\n",
	"data:\n", "data: \n", "data:  {}\n", "data:\r\n", "\r", "\r\n", "\n", "\r\r\n", "\rdata: {}\n",
	": c\n", ":\n", "\xEF\xBB\xBFdata: {}\n", "event: x\n", "id: 1\n", "retry: 5\n",
	"data: [DONE]\n", "data:[DONE]\r\n", "data: [DONE] \n", "data: {\"type\":\"message_stop\"}\n",
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n",
	"data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1},\"choices\":[]}\r\n",
	"data: {\"error\":{}}\n", "data: nope\n", "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n",
	"data: {\"choices\":[{\"delta\":{\"content\":\"x\\\"y\"}}],\"usage\":null}\n",
	"data: {\"choices\":[{\"delta\":{\"content\":\"a\rb\"}}],\"usage\":null}\n",
	"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\r",
	"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}",
}

func oddStream(r *rand.Rand, g *jsonGen) []byte {
	var b bytes.Buffer
	for range 1 + r.IntN(30) {
		switch r.IntN(3) {
		case 0:
			b.WriteString(oddLines[r.IntN(len(oddLines))])
		case 1:
			b.Write(g.repeatingStream())
		default:
			line := fmt.Sprintf(repeatedLines[r.IntN(len(repeatedLines))], g.freeText(), g.freeText())
			b.WriteString("data:" + line + "\n")
			if r.IntN(2) == 0 {
				b.WriteString("\n")
			}
		}
	}
	return b.Bytes()
}

func TestSSEStepLinesReadsOddLinesAsTheSteps(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 30))
	g := newJSONGen(31)
	for range 600 {
		stream := oddStream(r, g)
		var sizes []int
		for n := 0; n < len(stream); {
			k := 1 + r.IntN(1+r.IntN(200))
			sizes = append(sizes, k)
			n += k
		}
		want := readSSE(stream, sizes, true)
		got := readSSE(stream, sizes, false)
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Fatalf("%q in writes of %v:\nsteps    %+v\ntemplate %+v", stream, sizes, want, got)
		}
	}
}

// parseChatRequest keeps recent model names in a global cache: requests on
// many goroutines naming models that share slots, spelt with escapes and
// invalid UTF-8, each get the name their own body decodes to.
func TestModelNamesCacheUnderConcurrency(t *testing.T) {
	names := []string{`gpt-4a`, `xyz-4a`, `gpt\u002d4a`, "g\xffpt-4a", `gpt-4a `, `é-4a`, `e\u0301-4a`, `a\"`, `\\`}
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				raw := names[(i+w)%len(names)]
				body := []byte(`{"model":"` + raw + `","messages":[]}`)
				cr, err := parseChatRequest(body)
				want, ok := jsonString([]byte(`"` + raw + `"`))
				if err != nil || !ok || cr.Model != want {
					t.Errorf("%q: got %q %v, want %q", raw, cr.Model, err, want)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// countImage is told by the lexer whether a string holds an escape: an
// image named with escapes, as a value or as a key at any depth, counts as
// the same name written plainly.
func TestParseChatRequestCountsEscapedImageNames(t *testing.T) {
	for _, pair := range [][2]string{
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"\u0069mage_url","image_url":{"url":"u"}}]}]}`},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"x","image_url":{"url":"u"}}]}]}`,
			`{"model":"m","messages":[{"role":"user","content":[{"type":"x","imag\u0065_url":{"url":"u"}}]}]}`},
		{`{"model":"m","image":1,"input_image":2}`, `{"model":"m","\u0069mage":1,"input\u005fimage":2}`},
		{`{"model":"m","input":[{"type":"input_image"}]}`, `{"model":"m","input":[{"type":"input_imag\u0065"}]}`},
	} {
		plain, err := parseChatRequest([]byte(pair[0]))
		if err != nil {
			t.Fatal(err)
		}
		escaped, err := parseChatRequest([]byte(pair[1]))
		if err != nil {
			t.Fatal(err)
		}
		// PromptTokens counts a byte as a token, on top of each image's tokens.
		if plain.PromptTokens-int64(len(pair[0])) != escaped.PromptTokens-int64(len(pair[1])) {
			t.Errorf("%s: %+v\n%s: %+v", pair[0], plain, pair[1], escaped)
		}
	}
}
