package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPrimaryDownFallbackServesEveryCallAndSparesTheDeadPrimary(t *testing.T) {
	var out bytes.Buffer
	start := time.Now()
	rows, err := printFailover(context.Background(), &out, 100)
	elapsed := time.Since(start)
	require.NoError(t, err)
	require.Len(t, rows, 3)
	byClient := map[string]failoverRow{}
	for _, r := range rows {
		byClient[r.client] = r
	}

	p, g, f := byClient[plain.name], byClient[guarded.name], byClient[failingOver.name]
	assert.Zero(t, p.ok)
	assert.Zero(t, g.ok)
	assert.Equal(t, 100, f.ok, "the second server answers what the primary cannot")
	assert.EqualValues(t, 100, p.primaryHits)
	assert.Greater(t, g.primaryHits, int64(100), "the Retrier alone retries into the dead primary")
	// The first wave of callers, then a few probes per cool-down.
	probes := int64(httpguard.DefaultProbes) * int64(elapsed/(httpguard.DefaultCoolDown/timeScale)+1)
	assert.LessOrEqual(t, f.primaryHits, concurrency+probes, "the Breaker stops sending to it")
	assert.EqualValues(t, 100, f.secondHits)
	for _, s := range []string{"primary down", "HITS ON THE DEAD PRIMARY", failingOver.name} {
		assert.Contains(t, out.String(), s)
	}
}
