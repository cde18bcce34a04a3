package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRedactorMasksKeysAcrossWritesButNotPlaceholders(t *testing.T) {
	key := "sk-ant-api03-Q7wErTy8uIoP1aSdFgHjKl"
	r := newRedactor([]string{key, "EMPTY", key})
	var out strings.Builder
	var held []byte
	for _, part := range []string{"the key " + key[:9], key[9:20], key[20:] + " EMPTY\n", "ends sk-"} {
		buf := append(held, part...)
		n := r.body(buf)
		out.Write(buf[:len(buf)-n])
		held = append([]byte(nil), buf[len(buf)-n:]...)
		if strings.HasSuffix(part, "\n") {
			assert.Zero(t, n, "a line's end is never held back")
		}
	}
	out.Write(held)
	assert.Equal(t, "the key "+strings.Repeat("*", len(key))+" EMPTY\nends sk-", out.String(), "a placeholder key is no secret, and would garble answers")
}
