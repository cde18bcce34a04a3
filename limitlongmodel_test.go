package httpguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A gateway's tenant names the model, which names the Limiter's key: a
// model name of a megabyte made a key that held it twice (its id and its
// name), put it in the name of a shared store's key and in every error and
// event. Like a circuit's key, a long one is cut and ends with a hash of
// the whole, so that names differing past the cut keep their own buckets.
func TestLimiterBoundsTheKeyOfALongModelName(t *testing.T) {
	l, err := NewLimiter(LimitConfig{RequestsPerSecond: 1, Burst: 1})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", nil)
	require.NoError(t, err)
	long := strings.Repeat("m", 1<<20)
	now := l.now()
	a := l.key(req, long+"a", false, now)
	b := l.key(req, long+"b", false, now)
	require.NotSame(t, a, b, "names that differ past the cut keep their own keys")
	assert.Same(t, a, l.key(req, long+"a", false, now), "one name, one key")
	for _, ks := range []*keyState{a, b} {
		assert.Less(t, len(ks.id.model)+len(ks.name), 1024, "bytes the key holds of the name")
		assert.True(t, strings.Contains(ks.name, "... sha256:"), "the name ends with a hash of the whole")
	}
	assert.Equal(t, "deepseek-v3.2", l.key(req, "deepseek-v3.2", false, now).id.model, "a real model name is kept whole")
}
