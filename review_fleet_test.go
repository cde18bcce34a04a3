package httpguard

// Tests of the fleet-mode adversarial review of 2026-11-30 (branch
// review-fleet), on the in-memory stores.

import (
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
)

// A fleet sharing one LimitStore finds the provider's rate as one process
// does (TestLimiterConvergesOnTheProvidersRate: at least 90% of it served,
// at most 5% of requests answered 429). Each Limiter cuts its key's rate
// after a 429 from the rate it was sending at itself (its share of the
// fleet's, about 1/N of it) and passes that rate to the store as the rate
// of the bucket the whole fleet shares: once each replica has had a 429,
// the fleet sends at β/N of what the provider accepted. With the issue's
// scenario (50 callers, 200/s configured, a provider enforcing 50/s),
// spread over 4 replicas: 22.0/s served with bare 429s (one process: 47.7),
// 25.8/s with Retry-After and a precise reset (one process: 50.3). A store
// that keeps the rate for the fleet (AdaptiveLimitStore) fixes it.
func TestAFleetSharingALimitStoreConvergesOnTheProvidersRate(t *testing.T) {
	for _, h := range []httpguardtest.RateLimitHeaders{httpguardtest.NoRateLimitHeaders, httpguardtest.CoarseRetryAfter} {
		for _, rtt := range []time.Duration{time.Millisecond, 20 * time.Millisecond} {
			for _, replicas := range []int{1, 4, 8} {
				sc := issueScenario(h)
				sc.rtt = rtt
				fleet := simulate(t, sc, replicas)
				t.Logf("headers %d, rtt %v, %d replicas sharing a store: served %.1f/s, %.1f%% answered 429",
					h, rtt, replicas, fleet.servedPerSecond(), fleet.tooManyShare())
				assert.GreaterOrEqual(t, fleet.servedPerSecond(), 45.0, "headers %d, rtt %v, %d replicas: at least 90%% of the provider's 50/s", h, rtt, replicas)
				assert.LessOrEqual(t, fleet.tooManyShare(), 5.0, "headers %d, rtt %v, %d replicas: at most 5%% of requests answered 429", h, rtt, replicas)
			}
		}
	}
}
