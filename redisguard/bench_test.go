package redisguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// What a shared store costs a request, against the in-memory store: the
// time of a Reserve and a Settle, and the round trips to Redis (rtt/op).
// Run: go test -run '^$' -bench . -benchmem
func BenchmarkBudgetStore(b *testing.B) {
	for _, s := range benchStores(b) {
		b.Run(s.name, func(b *testing.B) {
			ctx := context.Background()
			var id atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			s.rtt.Store(0)
			for b.Loop() {
				r := httpguard.Reservation{ID: id.Add(1), Window: "lifetime", Amount: 100_000, Lease: httpguard.DefaultLease}
				if res, err := s.store.Reserve(ctx, r, httpguard.MaxBudgetLimit); err != nil || !res.OK {
					b.Fatal(res, err)
				}
				if _, err := s.store.Settle(ctx, "lifetime", r.ID, 40_000); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(s.rtt.Load())/float64(b.N), "rtt/op")
		})
	}
}

// The same through a Budget, one request at a time and many at once: the
// whole cost of the store per request (pricing, reserving, settling) with
// a transport that answers at once.
func BenchmarkBudgetRequest(b *testing.B) {
	for _, s := range benchStores(b) {
		for _, parallel := range []bool{false, true} {
			name := s.name
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.MaxBudgetLimit, Prices: testPrices, Store: s.store})
				require.NoError(b, err)
				benchRequests(b, budget, parallel, s.rtt)
			})
		}
	}
}

// benchRequests sends chat requests through layer to a transport that
// answers at once, with usage, and reports the commands sent to Redis per
// request (rtt counts them).
func benchRequests(b *testing.B, layer httpguard.Layer, parallel bool, rtt *atomic.Int64) {
	rt := layer.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":2,"completion_tokens":10}}`))}, nil
	}))
	body := chatBody(100)
	request := func() {
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportAllocs()
	b.ResetTimer()
	rtt.Store(0)
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				request()
			}
		})
	} else {
		for b.Loop() {
			request()
		}
	}
	b.ReportMetric(float64(rtt.Load())/float64(b.N), "rtt/op")
}

type benchStore struct {
	name  string
	store httpguard.BudgetStore
	rtt   *atomic.Int64 // commands sent to Redis
}

func benchStores(b *testing.B) []benchStore {
	client := startRedis(b, redisOptions{}).client(b)
	rtt := new(atomic.Int64)
	client.AddHook(countingHook{n: rtt})
	return []benchStore{
		{"memory", httpguard.NewMemoryBudgetStore(), new(atomic.Int64)},
		// testTimeout: a call slower than DefaultTimeout on a loaded
		// machine would fail the store closed, and the benchmark with it.
		{"redis", newStore(b, client, BudgetStoreConfig{}), rtt},
	}
}

// countingHook counts the commands a client sends (each is a round trip),
// or only those named name when it is set.
type countingHook struct {
	n    *atomic.Int64
	name string
}

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.name == "" || cmd.Name() == h.name {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A bare round trip to the same server, for scale.
func BenchmarkRedisPing(b *testing.B) {
	client := startRedis(b, redisOptions{}).client(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := client.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// What the shared LimitStore costs a request, against the in-memory store:
// a Take of a request and 100 tokens and the Adjust that corrects them
// (requests and tokens), or a Take of a request alone (requests only).
// Run: go test -run '^$' -bench LimitStore -benchmem
func BenchmarkLimitStore(b *testing.B) {
	// Limits no benchmark reaches: every Take succeeds.
	reqs := httpguard.BucketLimit{Rate: 1e9, Burst: 1e9}
	toks := httpguard.BucketLimit{Rate: 1e9, Burst: 1e12}
	for _, s := range benchLimitStores(b) {
		for _, withTokens := range []bool{true, false} {
			name := s.name + "/requests+tokens"
			if !withTokens {
				name = s.name + "/requests"
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				s.rtt.Store(0)
				for b.Loop() {
					if !withTokens {
						if wait, _, err := s.store.Take(ctx, "api.example.com m", reqs, httpguard.BucketLimit{}, 0); err != nil || wait > 0 {
							b.Fatal(wait, err)
						}
						continue
					}
					if wait, _, err := s.store.Take(ctx, "api.example.com m", reqs, toks, 100); err != nil || wait > 0 {
						b.Fatal(wait, err)
					}
					if err := s.store.Adjust(ctx, "api.example.com m", toks, -40); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(s.rtt.Load())/float64(b.N), "rtt/op")
			})
		}
	}
}

// The same through a Limiter, one request at a time and many at once: the
// whole cost of the store per request (estimating, taking, correcting)
// with a transport that answers at once.
func BenchmarkLimitRequest(b *testing.B) {
	for _, s := range benchLimitStores(b) {
		for _, parallel := range []bool{false, true} {
			name := s.name
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 1e9, Burst: 1e9, TokensPerMinute: 1e9, Store: s.store})
				require.NoError(b, err)
				benchRequests(b, l, parallel, s.rtt)
			})
		}
	}
}

type benchLimitStore struct {
	name  string
	store httpguard.LimitStore
	rtt   *atomic.Int64 // commands sent to Redis
}

// benchLimitStores returns the stores to compare. A Redis store that
// failed over would measure its local share: the benchmark fails instead.
func benchLimitStores(b *testing.B) []benchLimitStore {
	client := startRedis(b, redisOptions{}).client(b)
	rtt := new(atomic.Int64)
	client.AddHook(countingHook{n: rtt})
	failovers := new(atomic.Int64)
	b.Cleanup(func() {
		if n := failovers.Load(); n > 0 {
			b.Errorf("the Redis store failed over %d times: its numbers are partly the local share's", n)
		}
	})
	return []benchLimitStore{
		{"memory", httpguard.NewMemoryLimitStore(), new(atomic.Int64)},
		{"redis", newLimitStore(b, client, LimitStoreConfig{OnFailover: func(FailoverEvent) { failovers.Add(1) }}), rtt},
	}
}
