package httpguard

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
)

var (
	accuracyDuration = flag.Duration("limiter.accuracy", 10*time.Second, "how long BenchmarkLimiterAccuracy runs each time")
	accuracyRate     = flag.Float64("limiter.rate", 200, "the request rate BenchmarkLimiterAccuracy holds, per second")
)

// limMemTransport answers every request in memory with a chat completion that
// reports usage, so that benchmarks measure the layer, not the network.
type limMemTransport struct{}

const limMemAnswer = `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`

func (limMemTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(limMemAnswer)),
		ContentLength: int64(len(limMemAnswer)),
		Request:       req,
	}, nil
}

// benchRequest returns a request that can be sent again and again: a GET, or
// a chat POST whose body comes from GetBody.
func benchRequest(b *testing.B, chat bool) *http.Request {
	b.Helper()
	if !chat {
		req, err := http.NewRequest(http.MethodGet, "http://api.example/v1/models", nil)
		if err != nil {
			b.Fatal(err)
		}
		return req
	}
	body := []byte(`{"model":"deepseek-v3.2","max_tokens":256,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}]}`)
	req, err := http.NewRequest(http.MethodPost, "http://api.example/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

func roundTripOnce(b *testing.B, rt http.RoundTripper, req *http.Request) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// BenchmarkLimiterOverhead measures what the Limiter adds per request over
// an in-memory RoundTripper, with limits high enough never to wait: compare
// each limiter/* line with its base/* line.
func BenchmarkLimiterOverhead(b *testing.B) {
	lim, err := NewLimiter(LimitConfig{RequestsPerSecond: 1e9, Burst: 1 << 30, TokensPerMinute: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range []struct {
		name string
		chat bool
	}{{"get", false}, {"chat", true}} {
		for _, stack := range []struct {
			name string
			rt   http.RoundTripper
		}{{"base", limMemTransport{}}, {"limiter", lim.Wrap(limMemTransport{})}} {
			b.Run(stack.name+"/"+kind.name, func(b *testing.B) {
				req := benchRequest(b, kind.chat)
				b.ReportAllocs()
				for b.Loop() {
					roundTripOnce(b, stack.rt, req)
				}
			})
			b.Run(stack.name+"/"+kind.name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					req := benchRequest(b, kind.chat)
					for pb.Next() {
						roundTripOnce(b, stack.rt, req)
					}
				})
			})
		}
	}
}

// windowServer is a loopback provider that allows at most limit requests
// in any sliding window of one second, counted exactly from arrival times,
// and answers 429 to the others.
type windowServer struct {
	mu          sync.Mutex
	limit       int
	arrivals    []time.Time // accepted arrivals of the last second, oldest first
	ok, tooMany atomic.Int64
}

func (s *windowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	s.mu.Lock()
	i := 0
	for i < len(s.arrivals) && now.Sub(s.arrivals[i]) >= time.Second {
		i++
	}
	s.arrivals = s.arrivals[i:]
	allowed := len(s.arrivals) < s.limit
	if allowed {
		s.arrivals = append(s.arrivals, now)
	}
	s.mu.Unlock()
	if !allowed {
		s.tooMany.Add(1)
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	s.ok.Add(1)
	io.WriteString(w, "ok")
}

// BenchmarkLimiterAccuracy sends as fast as 50 goroutines can through a
// Limiter set to -limiter.rate requests/s (Burst 1), for -limiter.accuracy
// per iteration, to a loopback server that enforces the same rate over an
// exact sliding one-second window (allowing the one request of burst). It
// reports the achieved rate (req/s, want within 2% of the set rate) and the
// 429s the server had to send (want 0). It takes its full duration once per
// iteration: run it alone with
//
//	go test -run '^$' -bench Accuracy -benchtime 1x
func BenchmarkLimiterAccuracy(b *testing.B) {
	r, d := *accuracyRate, *accuracyDuration
	var achieved, tooMany float64
	for range b.N {
		achieved, tooMany = runAccuracy(b, r, d)
	}
	b.ReportMetric(achieved, "req/s")
	b.ReportMetric(100*(achieved-r)/r, "%off")
	b.ReportMetric(tooMany, "429s")
}

func runAccuracy(b testing.TB, r float64, d time.Duration) (achieved, tooMany float64) {
	ws := &windowServer{limit: int(r) + 1}
	srv := httptest.NewServer(ws)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	lim, err := NewLimiter(LimitConfig{RequestsPerSecond: r, Burst: 1})
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: lim.Wrap(tr)}

	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(d))
	defer cancel()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				resp, err := client.Do(req)
				if err != nil {
					// The Limiter refuses turns past the deadline at once.
					if !errors.Is(err, ErrRateLimited) && ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return float64(ws.ok.Load()+ws.tooMany.Load()) / d.Seconds(), float64(ws.tooMany.Load())
}

var convergeDuration = flag.Duration("limiter.converge", 10*time.Second, "how long BenchmarkLimiterConverge runs each case")

// BenchmarkLimiterConverge runs 50 goroutines for -limiter.converge through
// a Retrier and a Limiter set to 200 requests/s (burst 10), against a
// loopback provider that enforces 50 requests/s (a token bucket, burst 5):
// the Limiter must find the provider's real rate. It reports the requests
// served per second, that as a % of the provider's rate (want >= 90), and
// the % of the requests reaching the provider it answered 429 (want <= 5),
// for a provider that sends bare 429s and for one whose 429s carry a
// whole-second Retry-After and the precise x-ratelimit-reset-requests.
// Run it alone with
//
//	go test -run '^$' -bench Converge -benchtime 1x
func BenchmarkLimiterConverge(b *testing.B) {
	for _, c := range []struct {
		name    string
		headers httpguardtest.RateLimitHeaders
	}{{"bare-429", httpguardtest.NoRateLimitHeaders}, {"retry-after-1s+reset-20ms", httpguardtest.CoarseRetryAfter}} {
		b.Run(c.name, func(b *testing.B) {
			var served, share float64
			for range b.N {
				served, share = runConverge(b, c.headers, *convergeDuration)
			}
			b.ReportMetric(served, "served/s")
			b.ReportMetric(100*served/convergeProviderRate, "%provider")
			b.ReportMetric(share, "%429")
		})
	}
}

const convergeProviderRate = 50

func runConverge(b *testing.B, headers httpguardtest.RateLimitHeaders, d time.Duration) (served, share429 float64) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{RequestsPerSecond: convergeProviderRate, Burst: 5, RateLimitHeaders: headers})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	lim, err := NewLimiter(LimitConfig{RequestsPerSecond: 200, Burst: 10})
	if err != nil {
		b.Fatal(err)
	}
	retrier, err := NewRetrier(DefaultRetryPolicy())
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: Chain(tr, retrier, lim)}
	body := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.BaseURL()+"/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					continue // the deadline, or a refusal as it nears
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	st := srv.Stats()
	all := st.Status[http.StatusOK] + st.Status[http.StatusTooManyRequests]
	return float64(st.Status[http.StatusOK]) / d.Seconds(), 100 * float64(st.Status[http.StatusTooManyRequests]) / float64(max(all, 1))
}
