package httpguard

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Budget's price cache gives what its table gives, for models it holds
// and models it does not, at every tier, whatever the order of the
// lookups and however many models share a slot, and the hash of the
// model looked up, as hashModel gives it; once its slots are
// filled it allocates nothing.
func TestPriceCacheLooksUpWhatTheTableGives(t *testing.T) {
	pt := PriceTable{"a": {Input: 1}, "b": {Input: 2}, "a@priority": {Input: 3}, "ab": {Input: 4},
		"*": {Input: 5}, "*@fast": {Input: 6}, "x": {Input: 7, LongContext: &LongContextPrice{Above: 1, Price: Price{Input: 8}}},
		"c@@us": {Input: 9}}
	models := []string{"a", "b", "ab", "x", "c", "unlisted", "i", "q", "y", "", "aa", "ba", "abc", "d", "f", "g"}
	tiers := []tier{tierStandard, tierPriority, tierFast, "@us", "@@us", "@flex"}
	var c priceCache
	pointers := pt.pointers()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		m, tr := models[rng.IntN(len(models))], tiers[rng.IntN(len(tiers))]
		var miss foundPrice
		f := c.lookup(pointers, nil, m, tr, &miss)
		wp, wfb, wok := pt.lookup(m, tr)
		if wok {
			require.NotNil(t, f.price, "%q %q", m, tr)
			require.Equal(t, wp, *f.price, "%q %q", m, tr)
		} else {
			require.Nil(t, f.price, "%q %q", m, tr)
		}
		require.Equal(t, wfb, f.fallback, "%q %q", m, tr)
		require.Equal(t, wok, f.ok, "%q %q", m, tr)
		require.Equal(t, hashModel(m), f.model, "%q %q", m, tr)
	}
	for i := range c {
		require.NotNil(t, c[i].Load(), "slot %d", i)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		var miss foundPrice
		c.lookup(pointers, nil, models[rng.IntN(len(models))], tiers[rng.IntN(len(tiers))], &miss)
	}))
}
