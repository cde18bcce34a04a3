package httpguard

import (
	"strings"
	"testing"
)

// benchStackStream is the stream bench/'s provider sends for a request
// that asked for usage: 200 identical content chunks, the usage chunk,
// [DONE].
var benchStackStream = func() string {
	chunk := `data: {"id":"c3","object":"chat.completion.chunk","model":"deepseek-v3.2","choices":[{"index":0,"delta":{"content":"lorem "},"finish_reason":null}],"usage":null}` + "\n\n"
	usage := `data: {"id":"c3","object":"chat.completion.chunk","model":"deepseek-v3.2","choices":[],"usage":{"prompt_tokens":2100,"completion_tokens":200,"total_tokens":2300}}` + "\n\n"
	return strings.Repeat(chunk, 200) + usage + "data: [DONE]\n\n"
}()

// BenchmarkSSEScannerWrites is the scanner alone on the streams, written
// in the 8 KiB pieces io.Copy reads, a new scanner per stream as a layer
// makes per request.
func BenchmarkSSEScannerWrites(b *testing.B) {
	for _, c := range []struct {
		name   string
		stream []byte
	}{
		{"stack", []byte(benchStackStream)},
		{"stream200", []byte(benchStream200)},
		{"anthropic200", []byte(benchAnthropicStream200)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.stream)))
			for b.Loop() {
				s := &sseScanner{}
				for p := c.stream; len(p) > 0; {
					n := min(len(p), 8<<10)
					s.write(p[:n])
					p = p[n:]
				}
				if _, ok := s.result(true); !ok {
					b.Fatal("no usage")
				}
			}
		})
	}
}

// BenchmarkSSEStackStripper is what the Budget does to the stack's stream
// when it added include_usage: the usage reader stripping the usage chunk,
// read as io.Copy reads (8 KiB).
func BenchmarkSSEStackStripper(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchStackStream)))
	buf := make([]byte, 8<<10)
	rb := &scanBody{}
	for b.Loop() {
		rb.Reset(benchStackStream)
		s := newUsageChunkStripper(rb)
		if n := drainBody(s, buf); n >= len(benchStackStream) {
			b.Fatal("the usage chunk was not stripped")
		}
	}
}
