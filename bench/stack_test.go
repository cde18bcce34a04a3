package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/require"
)

// BenchmarkStack measures what each contender adds to a request over an
// in-memory provider, in the cases the issue names: a small chat request
// with usage in the answer, an 8 KiB prompt with a 1 KiB answer, a streamed
// answer of 200 SSE chunks, and the small chat from 8 goroutines at once
// (to expose lock contention). The contenders are the bare transport,
// go-retryablehttp's RoundTripper and httpguard's full stack (Retrier →
// Budget → Limiter, every feature on: pricing, usage, token accounting,
// include_usage). What a contender adds is its line minus bare's. Besides
// ns/op, the wall time of the goroutines sending, each line reports
// cpu-ns/op, the CPU time the whole process spent per request: work a
// contender leaves to other cores, such as collecting its garbage, counts
// there and not in ns/op.
//
//	go test -run '^$' -bench Stack -benchmem
func BenchmarkStack(b *testing.B) {
	cases := []struct {
		name     string
		body     []byte
		parallel bool
	}{
		{"chat", chatBody, false},
		{"prompt8k", promptBody(8<<10, false), false},
		{"stream200", promptBody(8<<10, true), false},
		{"chat-parallel8", chatBody, true},
	}
	contenders := []struct {
		name string
		wrap func(testing.TB, http.RoundTripper) http.RoundTripper
	}{
		{"bare", func(_ testing.TB, rt http.RoundTripper) http.RoundTripper { return rt }},
		{"retryablehttp", retryableHTTP},
		{"httpguard", fullStack},
	}
	for _, c := range cases {
		for _, k := range contenders {
			b.Run(c.name+"/"+k.name, func(b *testing.B) {
				rt := k.wrap(b, provider{})
				b.ReportAllocs()
				b.SetBytes(int64(len(c.body)))
				defer reportCPU(b)()
				if !c.parallel {
					for b.Loop() {
						roundTrip(b, rt, c.body)
					}
					return
				}
				b.SetParallelism(4) // 8 goroutines on 2 cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						roundTrip(b, rt, c.body)
					}
				})
			})
		}
	}
}

// reportCPU starts counting the process's CPU time; the function it
// returns reports it per request as cpu-ns/op. Unlike ns/op, which is the
// wall time of the benchmark's goroutines, it counts the work done on
// other cores as well, such as collecting each request's garbage. It also
// counts what the runtime does with an idle core (a scheduler spinning in
// search of work, the collector's idle workers), so that alone it is not
// one contender's work: compare it with bare's, as ns/op.
func reportCPU(b *testing.B) func() {
	start, ok := processCPU()
	return func() {
		if end, endOK := processCPU(); ok && endOK && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func roundTrip(b *testing.B, rt http.RoundTripper, body []byte) {
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header = http.Header{"Content-Type": {"application/json"}}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// fullStack is httpguard's recommended stack with every layer doing its
// work: a Budget that prices and reads usage, a Limiter counting requests
// and tokens (limits far above what the benchmark sends), the default
// Retrier with 3 retries.
func fullStack(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	p := httpguard.DefaultRetryPolicy()
	p.MaxRetries = retries
	r, err := httpguard.NewRetrier(p)
	require.NoError(tb, err)
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.MaxBudgetLimit, Prices: httpguard.ExamplePrices()})
	require.NoError(tb, err)
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 1e9, Burst: math.MaxInt32, TokensPerMinute: math.MaxInt32})
	require.NoError(tb, err)
	return httpguard.Chain(base, r, budget, l)
}

// promptBody is a chat request with a user message of n bytes.
func promptBody(n int, stream bool) []byte {
	return fmt.Appendf(nil, `{"model":"deepseek-v3.2","stream":%v,"max_tokens":512,"messages":[{"role":"user","content":%q}]}`,
		stream, strings.Repeat("lorem ipsum ", n/12))
}

// provider answers in memory as an OpenAI-compatible API does: a JSON
// completion with usage (1 KiB of content for long prompts), or, for a
// streaming request, 200 SSE chunks, the usage chunk when the request asks
// for it, and [DONE]. It reads the whole request body, as a server does.
type provider struct{}

var (
	shortAnswer = []byte(`{"id":"c1","object":"chat.completion","model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`)
	longAnswer  = fmt.Appendf(nil, `{"id":"c2","object":"chat.completion","model":"deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":2100,"completion_tokens":256,"total_tokens":2356,"prompt_tokens_details":{"cached_tokens":0}}}`, strings.Repeat("dolor sit ", 100))
	chunk       = []byte(`data: {"id":"c3","object":"chat.completion.chunk","model":"deepseek-v3.2","choices":[{"index":0,"delta":{"content":"lorem "},"finish_reason":null}],"usage":null}` + "\n\n")
	usageChunk  = []byte(`data: {"id":"c3","object":"chat.completion.chunk","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":2100,"completion_tokens":200,"total_tokens":2300}}` + "\n\n")
	done        = []byte("data: [DONE]\n\n")
	streams     = [2][]byte{sse(false), sse(true)}
)

func sse(withUsage bool) []byte {
	out := bytes.Repeat(chunk, 200)
	if withUsage {
		out = append(out, usageChunk...)
	}
	return append(out, done...)
}

// requestBuffers spares the provider an allocation per request body, so
// that the benchmark measures the contenders, not the provider.
var requestBuffers = sync.Pool{New: func() any { return new([16 << 10]byte) }}

func (provider) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		buf := requestBuffers.Get().(*[16 << 10]byte)
		defer requestBuffers.Put(buf)
		n, _ := io.ReadFull(req.Body, buf[:])
		body = buf[:n]
		req.Body.Close()
	}
	resp := &http.Response{StatusCode: http.StatusOK, Request: req, Header: http.Header{"Content-Type": {"application/json"}}}
	switch {
	case bytes.Contains(body, []byte(`"stream":true`)):
		resp.Header["Content-Type"][0] = "text/event-stream"
		resp.Body = io.NopCloser(bytes.NewReader(streams[boolIndex(bytes.Contains(body, []byte(`"include_usage":true`)))]))
	case len(body) > 1<<10:
		resp.Body = io.NopCloser(bytes.NewReader(longAnswer))
	default:
		resp.Body = io.NopCloser(bytes.NewReader(shortAnswer))
	}
	return resp, nil
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
