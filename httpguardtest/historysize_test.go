package httpguardtest

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: NewServer made room for all of History at once, so a History
// meant as "keep them all" panicked (math.MaxInt: makeslice: cap out of
// range) or took the memory of a billion requests never sent.
func TestAHugeHistoryKeepsWhatComes(t *testing.T) {
	for _, h := range []int{math.MaxInt, 1 << 40} {
		s, err := NewServer(Config{History: h})
		require.NoError(t, err)
		for range 3 {
			do(t, s, "/v1/chat/completions", chatBody)
		}
		assert.Len(t, s.Requests(), 3, "History %d", h)
		s.Close()
	}
}
