package httpguard

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// absentKeys's switch compares the map's keys with constants: the
// constants must be the keys http.Header files the headers under.
func TestTheBudgetsHeaderKeysAreCanonical(t *testing.T) {
	assert.Equal(t, http.CanonicalHeaderKey(vertexPriorityHeader), vertexPriorityKey)
	for _, k := range headerKeyNames {
		assert.Equal(t, http.CanonicalHeaderKey(k.name), k.name)
	}
}

// headerKeyNames are the Budget's header keys, as absentKeys reads them.
var headerKeyNames = []struct {
	name string
	key  headerKeys
}{
	{"Upgrade", keyUpgrade},
	{"X-Portkey-Config", keyPortkeyConfig},
	{"X-Portkey-Provider", keyPortkeyProvider},
	{"Helicone-Fallbacks", keyHeliconeFallbacks},
	{vertexPriorityKey, keyVertexPriority},
}

// absentKeys may spare the Budget a lookup only of a key the header does
// not hold, whatever the header's size; in a header small enough to range
// over, it spares every lookup of a key not there.
func TestAbsentKeysNeverHidesAKeyTheHeaderHolds(t *testing.T) {
	// The first others are a plain client's keys, which absentKeys asks
	// the map for in a header of two keys at most.
	plain := []string{"Content-Type", "Authorization"}
	for others := range 13 {
		for set := range 1 << len(headerKeyNames) {
			h := http.Header{}
			for i := range others {
				if i < len(plain) {
					h.Set(plain[i], "v")
				} else {
					h.Set(fmt.Sprintf("X-Stainless-Header-%d", i), "v")
				}
			}
			for i, k := range headerKeyNames {
				if set&(1<<i) != 0 {
					h[k.name] = []string{"v"}
				}
			}
			absent := absentKeys(h)
			for i, k := range headerKeyNames {
				held := set&(1<<i) != 0
				if held {
					require.Zero(t, absent&k.key, "%s held, among %d others", k.name, others)
				} else if len(h) <= 4 {
					require.NotZero(t, absent&k.key, "%s not held, in a header of %d keys", k.name, len(h))
				}
			}
		}
	}
}

// A header of only a plain client's keys, which absentKeys asks the map
// for, holds none of the Budget's; one with another key beside them is
// ranged over.
func TestAbsentKeysOfAPlainClientsHeader(t *testing.T) {
	for _, h := range []http.Header{
		{},
		{"Content-Type": {"application/json"}},
		{"Authorization": {"Bearer k"}},
		{"Content-Type": {"application/json"}, "Authorization": {"Bearer k"}},
	} {
		assert.Equal(t, everyKey, absentKeys(h), "%v", h)
	}
	for _, k := range headerKeyNames {
		for _, h := range []http.Header{
			{k.name: {"v"}},
			{"Content-Type": {"application/json"}, k.name: {"v"}},
			{"Authorization": {"Bearer k"}, k.name: {"v"}},
			{"Content-Type": {"application/json"}, "Authorization": {"Bearer k"}, k.name: {"v"}},
		} {
			assert.Equal(t, everyKey&^k.key, absentKeys(h), "%v", h)
		}
	}
}
