package httpguard

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/hashicorp/go-retryablehttp"
)

// memTransport answers every request with the same small 200, without a
// network, so a benchmark measures only what the layers above it add.
type memTransport struct{}

type nopBody struct{}

func (nopBody) Read([]byte) (int, error) { return 0, io.EOF }
func (nopBody) Close() error             { return nil }

func (memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: nopBody{}, Request: req}, nil
}

var benchBody = []byte(`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"hello"}],"max_tokens":64}`)

// benchmarkRoundTrip sends a typical SDK request (a POST with a replayable
// JSON body) through rt; compare with BenchmarkOverhead/bare to get what a
// layer adds.
func benchmarkRoundTrip(b *testing.B, rt http.RoundTripper) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("POST", "http://api.test/v1/chat/completions", bytes.NewReader(benchBody))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkOverhead(b *testing.B) {
	b.Run("bare", func(b *testing.B) { benchmarkRoundTrip(b, memTransport{}) })
	b.Run("httpguard.Retrier", func(b *testing.B) {
		r, err := NewRetrier(DefaultRetryPolicy())
		if err != nil {
			b.Fatal(err)
		}
		benchmarkRoundTrip(b, r.Wrap(memTransport{}))
	})
	b.Run("retryablehttp.RoundTripper", func(b *testing.B) {
		c := retryablehttp.NewClient()
		c.Logger = nil
		c.HTTPClient.Transport = memTransport{}
		benchmarkRoundTrip(b, &retryablehttp.RoundTripper{Client: c})
	})
}
