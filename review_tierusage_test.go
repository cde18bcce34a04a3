package httpguard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// usageTree writes a usage value from the objects of counts it may hold
// (usageObjects): counts and details objects, repeated, nulled, given
// before or after their parent's counts, nested one level deeper than
// they belong, sometimes in another case or of another type.
func (g *jsonGen) usageTree(b *bytes.Buffer, obj uint8, depth int) {
	if g.r.IntN(12) == 0 {
		b.WriteString("null")
		return
	}
	o := &usageObjects[obj]
	b.WriteByte('{')
	for i := range g.r.IntN(7) {
		if i > 0 {
			b.WriteByte(',')
		}
		g.space(b)
		k := g.r.IntN(len(o.names))
		name := o.names[k]
		switch g.r.IntN(40) {
		case 0:
			name = strings.ToUpper(name[:1]) + name[1:]
		case 1:
			name = `\u00` + fmt.Sprintf("%x", name[0]) + name[1:]
		}
		g.string(b, name)
		b.WriteByte(':')
		g.space(b)
		switch {
		case o.fields[k] == usageFieldCount && depth < 4 && g.r.IntN(10) != 0:
			g.usageTree(b, o.objects[k], depth+1)
		case o.fields[k] == usageFieldCount && g.r.IntN(2) == 0: // deeper than it belongs
			g.usageTree(b, obj, depth+1)
		case g.r.IntN(10) == 0:
			b.WriteString([]string{"null", `"3"`, "1.5", "[]", "{}"}[g.r.IntN(5)])
		default:
			fmt.Fprint(b, g.r.IntN(60))
		}
	}
	b.WriteByte('}')
}

// structuredAnswer is an answer whose usage has the shape of real ones,
// with service_tier members before, between and after usage members.
func (g *jsonGen) structuredAnswer() []byte {
	var members []string
	for range 1 + g.r.IntN(2) {
		var b bytes.Buffer
		b.WriteString(`"usage":`)
		g.usageTree(&b, 0, 0)
		members = append(members, b.String())
	}
	for range g.r.IntN(3) {
		var b bytes.Buffer
		g.serviceTier(&b)
		members = append(members, b.String())
	}
	if g.r.IntN(3) == 0 {
		members = append(members, `"id":"chatcmpl-1"`, `"choices":[{"index":0,"message":{"content":"ok"}}]`)
	}
	g.r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	return []byte("{" + strings.Join(members, ",") + "}")
}

// Usage objects of the shapes real answers have, however their details
// objects repeat, nest or come: the usage, and the tier beside it, read
// as encoding/json and an exact decoder read them, in every split.
func TestJSONUsageScannerReadsStructuredUsageAsEncodingJSON(t *testing.T) {
	g := newJSONGen(31)
	for i := range 4000 {
		body := g.structuredAnswer()
		checkAnswerUsage(t, body, [][]byte{body})
		checkAnswerUsage(t, body, splitRandomly(g, body))
		if i%20 == 0 {
			for cut := 1; cut < len(body); cut++ {
				checkAnswerUsage(t, body, [][]byte{body[:cut], body[cut:]})
			}
		}
	}
}

// A chat chunk, and a Responses stream's response object, read the same
// members as the JSON answer does.
func TestSSEScannerReadsStructuredUsageAsAJSONAnswer(t *testing.T) {
	g := newJSONGen(32)
	for range 3000 {
		// One data line: the generator's line breaks become spaces.
		obj := bytes.ReplaceAll(bytes.ReplaceAll(g.structuredAnswer(), []byte("\r"), []byte(" ")), []byte("\n"), []byte(" "))
		var answer jsonUsageScanner
		answer.write(obj)
		want, wantOK := answer.result()
		for _, stream := range []string{
			"data: " + string(obj) + "\n\ndata: [DONE]\n\n",
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":" + string(obj) + "}\n\n",
		} {
			for _, size := range []int{len(stream), 1 + g.r.IntN(17)} {
				var s sseScanner
				for i := 0; i < len(stream); i += size {
					s.write([]byte(stream[i:min(i+size, len(stream))]))
				}
				got, gotOK := s.result(true)
				require.Equal(t, want.ranAtPriority, got.ranAtPriority, "tier of %s in chunks of %d", stream, size)
				require.Equal(t, wantOK, gotOK, "%s in chunks of %d", stream, size)
				if wantOK {
					require.Equal(t, want, got, "%s in chunks of %d", stream, size)
				}
			}
		}
	}
}
