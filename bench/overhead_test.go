package bench

import (
	"io"
	"net/http"
	"testing"
)

// memTransport answers every request with the same small 200 without a
// network, so that a benchmark measures only what the layer above adds.
type memTransport struct{}

type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

func (memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: emptyBody{}, Request: req}, nil
}

// BenchmarkOverhead sends a typical SDK request (a POST with a replayable
// JSON body) through each peer over memTransport. What a peer adds per
// request is its result minus bare's, in the same run.
func BenchmarkOverhead(b *testing.B) {
	b.Run("bare", func(b *testing.B) { roundTrips(b, memTransport{}) })
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) { roundTrips(b, p.wrap(b, memTransport{})) })
	}
}

func roundTrips(b *testing.B, rt http.RoundTripper) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(newChatRequest(b, "http://api.test/v1/chat/completions"))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
