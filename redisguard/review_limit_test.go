package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// While Redis is away, a process paces its tokens at its share of the rate
// even when a request is estimated at more than its share of the burst (a
// long prompt with a large max_tokens, in a fleet of many replicas).
// Charging such a request only the share's burst would let each process
// send far more than its share; crediting its overestimate afterwards
// would then refill the bucket it barely took from, and lift the tokens
// limit altogether.
func TestLimitStoreFailOpenShareChargesRequestsLargerThanItsBurst(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	s := newLimitStore(t, srv.client(t), LimitStoreConfig{FailOpenShare: 0.25, ProbeInterval: time.Hour})
	ctx := context.Background()
	toks := httpguard.BucketLimit{Rate: 1000, Burst: 100} // the share: 250 tokens a second, a burst of 25
	take(t, s, "warm", noLimit, noLimit, 0)
	srv.kill()

	for _, c := range []struct {
		key            string
		estimate, used int64
	}{
		{"as estimated", 80, 80},
		{"overestimated", 80, 40},
	} {
		const span = 200 * time.Millisecond
		var used int64
		start := time.Now()
		for time.Since(start) < span {
			wait, _, err := s.Take(ctx, c.key, noLimit, toks, c.estimate)
			require.NoError(t, err)
			if wait == 0 {
				used += c.used
				require.NoError(t, s.Adjust(ctx, c.key, toks, c.used-c.estimate))
				continue
			}
			if time.Since(start)+wait > span {
				break
			}
			time.Sleep(wait)
		}
		elapsed := time.Since(start).Seconds()
		share := 0.25 * (float64(toks.Burst) + toks.Rate*elapsed)
		assert.LessOrEqual(t, float64(used), share+float64(c.estimate),
			"%s: tokens used in %.0fms, against a share of %.0f (and one request)", c.key, elapsed*1000, share)
	}
}
