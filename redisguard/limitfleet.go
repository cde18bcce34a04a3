package redisguard

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/holysheep/httpguard"
)

// The LimitStore as an httpguard.AdaptiveLimitStore: each limiter key's
// adaptive request rate is a hash in Redis next to its buckets (see
// fleetLib), so that one 429 cuts the rate of the whole fleet once per
// round, from the rate the fleet's requests were accepted at. The requests
// the store admits are counted there with the pause check of a later
// Take, and the rate is read with it: neither costs a round trip.

var _ httpguard.AdaptiveLimitStore = (*LimitStore)(nil)

// readRate is an adaptive rate as Redis gave it, and when.
type readRate struct {
	rate httpguard.AdaptiveRate
	at   time.Time
}

// AdaptiveRate implements httpguard.AdaptiveLimitStore: it answers with
// what the last Take for key read in Redis, or, while Redis does not
// answer, with the local share's.
func (s *LimitStore) AdaptiveRate(ctx context.Context, key string) (httpguard.AdaptiveRate, error) {
	if s.link.isDown() && s.local != nil {
		ar, err := s.local.AdaptiveRate(ctx, key)
		return fleetUnits(ar, s.share()), err
	}
	s.mu.Lock()
	r, ok := s.rates[key]
	s.mu.Unlock()
	if !ok || r.rate.Decreases == 0 {
		return httpguard.AdaptiveRate{}, nil
	}
	r.rate.Since += time.Since(r.at)
	return r.rate, nil
}

// SlowDown implements httpguard.AdaptiveLimitStore: the fleet's 429s and
// admitted requests are counted in Redis, and judged there. While Redis
// does not answer, the local share judges and slows down alone. A rate
// that is not one (NaN, infinite, below zero) is refused before Redis: it
// would be the fleet's decrease for the round, which no Limiter adopts;
// so is a tolerated share outside [0, 1].
func (s *LimitStore) SlowDown(ctx context.Context, key string, sentAgo time.Duration, rate, tolerated float64) (httpguard.AdaptiveRate, bool, error) {
	var ar httpguard.AdaptiveRate
	var beyond bool
	if !(rate >= 0 && rate <= math.MaxFloat64) {
		return ar, false, fmt.Errorf("redisguard: limit store: SlowDown: rate must be a finite number >= 0, got %v", rate)
	}
	if !(tolerated >= 0 && tolerated <= 1) {
		return ar, false, fmt.Errorf("redisguard: limit store: SlowDown: tolerated share must be from 0 to 1, got %v", tolerated)
	}
	if done, err := s.link.onRedis(ctx, key, func() error {
		k := s.keys.of(key)
		a, age := s.takeAdmitted(key, true)
		v, err := s.call.script(ctx, slowDownScript, []string{k.pause, k.adapt}, a.n, seconds(age),
			seconds(sentAgo), strconv.FormatFloat(rate, 'g', -1, 64), strconv.FormatFloat(tolerated, 'g', -1, 64))
		if err != nil {
			s.unadmit(key, a)
			return err
		}
		var left time.Duration
		left, ar, err = parseFleetReply(v)
		if err == nil {
			beyond = left > 0 // the reply's first field is the verdict
			s.keepRate(key, ar)
		}
		return err
	}); done {
		return ar, beyond, err
	}
	if s.local == nil {
		return ar, false, s.link.unavailable("not slowing the fleet down")
	}
	// The local share runs at share of the rates the Limiter passes, and
	// measures what it was accepted at in its own units: the rate it
	// gives back is scaled up to the fleet's, which the Limiter passes.
	share := s.share()
	ar, beyond, err := s.local.SlowDown(ctx, key, sentAgo, rate*share, tolerated)
	return fleetUnits(ar, share), beyond, err
}

// fleetUnits returns the local share's adaptive rate ar, its share's rate,
// as the fleet's.
func fleetUnits(ar httpguard.AdaptiveRate, share float64) httpguard.AdaptiveRate {
	if ar.Decreases > 0 {
		ar.From /= share
	}
	return ar
}

// parseFleetReply reads a reply of fleetLib's: the pause left, and the
// adaptive rate.
func parseFleetReply(v any) (time.Duration, httpguard.AdaptiveRate, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 4 {
		return 0, httpguard.AdaptiveRate{}, fmt.Errorf("unexpected reply to a pause check: %v", v)
	}
	left, ok1 := a[0].(int64)
	n, ok2 := a[1].(int64)
	fromS, ok3 := a[2].(string)
	since, ok4 := a[3].(int64)
	from, err := strconv.ParseFloat(fromS, 64)
	if !ok1 || !ok2 || !ok3 || !ok4 || err != nil || n < 0 {
		return 0, httpguard.AdaptiveRate{}, fmt.Errorf("unexpected reply to a pause check: %v", v)
	}
	ar := httpguard.AdaptiveRate{Decreases: uint64(n), From: from, Since: time.Duration(since) * time.Microsecond}
	return time.Duration(left) * time.Microsecond, ar, nil
}

// admitCountEvery is how often a store counts in Redis the requests it
// admitted for a key, with its next Take of the key (and at once with a
// SlowDown): counting each one would cost Redis a write at every Take,
// and the rate accepted is measured over a second. Redis counts them in
// the second the first of them was admitted in, however late they come
// (see fleetLib).
const admitCountEvery = 50 * time.Millisecond

// admitted is the requests a store admitted for a key and has not counted
// in Redis yet, since the first of them.
type admitted struct {
	n     int64
	since time.Time
}

// admit counts a request the store admitted for key, to count in Redis
// later.
func (s *LimitStore) admit(key string) {
	s.mu.Lock()
	if a, ok := s.admitted[key]; ok {
		a.n++
		s.admitted[key] = a
	} else if len(s.admitted) < maxCachedKeys {
		s.admitted[key] = admitted{n: 1, since: time.Now()}
	}
	s.mu.Unlock()
}

// takeAdmitted returns the requests admitted for key not counted yet, to
// count now, and how long ago the first of them was: when they are
// admitCountEvery (s.countEvery) old, or at once if now.
func (s *LimitStore) takeAdmitted(key string, now bool) (admitted, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.admitted[key]
	if !ok {
		return admitted{}, 0
	}
	age := time.Since(a.since)
	if !now && age < s.countEvery {
		return admitted{}, 0
	}
	delete(s.admitted, key)
	return a, age
}

// seconds formats d in seconds, for a script.
func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// unadmit puts back b, the requests a failed call did not count, with
// the time the first of them was admitted (Redis counts them in its
// second), unless requests admitted since wait already: b's then join
// theirs.
func (s *LimitStore) unadmit(key string, b admitted) {
	if b.n == 0 {
		return
	}
	s.mu.Lock()
	if a, ok := s.admitted[key]; ok {
		b.n += a.n
		b.since = a.since
	}
	s.admitted[key] = b
	s.mu.Unlock()
}

// keepRate keeps the adaptive rate Redis gave for key.
func (s *LimitStore) keepRate(key string, ar httpguard.AdaptiveRate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ar.Decreases == 0 {
		delete(s.rates, key)
		return
	}
	if len(s.rates) >= maxCachedKeys {
		clear(s.rates)
	}
	s.rates[key] = readRate{rate: ar, at: time.Now()}
}
