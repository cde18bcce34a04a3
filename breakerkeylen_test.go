package httpguard

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A gateway's tenant names the model, and the model names the circuit: a
// model name of a megabyte made a key of a megabyte, held as long as its
// circuit (one with a run of failures, or open, outlives a RatioWindow),
// and quoted whole in every refusal, event and log. A long key is now cut
// and ends with a hash of the whole: two long names that differ only past
// the cut are still two circuits, and a real model's key is kept as it is.
func TestBreakerBoundsTheKeyOfALongModelName(t *testing.T) {
	f := newBreakerFlood(t, BreakerConfig{ConsecutiveFailures: 2, RatioWindow: time.Second, CoolDown: time.Minute})
	long := strings.Repeat("m", 1<<20)
	const names = 20
	for i := range names {
		require.NoError(t, f.call(t, long+strconv.Itoa(i)), "the first failure")
	}
	require.NoError(t, f.call(t, "gpt-4.1"))

	f.b.mu.RLock()
	held := 0
	for k := range f.b.circuits {
		held += len(k)
	}
	f.b.mu.RUnlock()
	assert.Equal(t, names+1, f.circuits(), "names that differ past the cut keep their own circuits")
	assert.Less(t, held, names*1024, "bytes of keys held")

	s, ok := f.b.StatsOf("api.test gpt-4.1")
	require.True(t, ok, "a short key is kept as it is")
	assert.Equal(t, 1, s.ConsecutiveFailures)

	s, ok = f.b.StatsOf("api.test " + long + "7")
	require.True(t, ok, "StatsOf finds a long key's circuit by the key in full")
	assert.Equal(t, 1, s.ConsecutiveFailures)
	assert.Less(t, len(s.Key), 1024)
	assert.True(t, strings.HasPrefix(s.Key, "api.test mmm"), s.Key)
	_, ok = f.b.StatsOf(s.Key)
	assert.True(t, ok, "StatsOf finds it by the key Stats gives too")

	require.NoError(t, f.call(t, long+"7"), "the second failure opens it")
	err := f.call(t, long+"7")
	require.True(t, errors.Is(err, ErrCircuitOpen), "%v", err)
	assert.Less(t, len(err.Error()), 1024, "the refusal quotes the cut key")
	_, ok = f.b.StatsOf("api.test " + long + "8")
	require.True(t, ok)
	assert.NoError(t, f.call(t, long+"8"), "another long name's circuit is not the one that opened")
}

// A key cut for its length is longer than any key kept whole: a short
// key that reads as a cut one (a tenant naming its model after another's
// cut key) does not reach that circuit.
func TestBreakerCutKeyIsNoShortKey(t *testing.T) {
	long := []byte("api.test " + strings.Repeat("é", 1000))
	cut := boundKey(long)
	assert.Greater(t, len(cut), maxKeyLen)
	assert.Less(t, len(cut), 2*maxKeyLen)
	assert.Equal(t, string(cut), string(boundKey(long)), "the same key is cut alike")
	assert.True(t, strings.HasPrefix(string(cut), "api.test é"))
	assert.True(t, utf8.Valid(cut), "cut between runes: %q", cut)
	short := []byte("api.test gpt-4.1")
	assert.Equal(t, string(short), string(boundKey(short)))
}
