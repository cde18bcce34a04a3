package httpguard

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// scanImages reads arrays of messages written in compactMessage's form
// ({"role":"…","content":"…"}) as scanValue does, whether compactMessage
// reads them or declines (an escape, a role longer than a word, an image
// name, a near miss of the form): whole, cut anywhere, and read from
// every position.
func TestCompactMessagesReadAsScanValue(t *testing.T) {
	g := newJSONGen(71)
	roles := []string{"user", "users", "use", "user\"", "system", "assistant", "developer", "tool", "image", "Image_URL", "fil\u0065_id", "", "a\"b", "x\\", "usér", "\n"}
	forms := []string{`{"role":%s,"content":%s}`, `{"role":%s,"content":%s }`, `{"role":%s, "content":%s}`, `{"role" :%s,"content":%s}`,
		`{"role":%s,"Content":%s}`, `{"role":%s,"content":%s,"name":"x"}`, `{"rolE":%s,"content":%s}`, `{"role":%s,"contents":%s}`}
	var read, declined int
	for range 1500 {
		var b bytes.Buffer
		b.WriteByte('[')
		for i := range 1 + g.r.IntN(3) {
			if i > 0 {
				b.WriteByte(',')
			}
			var role, content bytes.Buffer
			if g.r.IntN(3) == 0 {
				g.string(&role, g.word())
			} else {
				g.string(&role, roles[g.r.IntN(len(roles))])
			}
			switch k := g.r.IntN(4); k {
			case 0:
				g.string(&content, g.word())
			case 1:
				g.string(&content, scanImagesKeys[g.r.IntN(len(scanImagesKeys))])
			default:
				g.string(&content, strings.Repeat("hello ", g.r.IntN(8)))
			}
			form := forms[0]
			if g.r.IntN(4) == 0 {
				form = forms[g.r.IntN(len(forms))]
			}
			m := strings.Replace(strings.Replace(form, "%s", role.String(), 1), "%s", content.String(), 1)
			if end, _ := compactMessage([]byte(m), 0); end > 0 {
				read++
			} else {
				declined++
			}
			b.WriteString(m)
		}
		b.WriteByte(']')
		checkScanImages(t, b.Bytes())
	}
	assert.Greater(t, read, 1000, "compactMessage should read most messages")
	assert.Greater(t, declined, 500, "compactMessage should decline many")
}
