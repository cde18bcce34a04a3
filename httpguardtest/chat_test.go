package httpguardtest

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func FuzzParseChat(f *testing.F) {
	for _, s := range []string{
		chatBody,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url"}]}]}`,
		`{"system":[{"type":"text","text":"be brief"}],"max_tokens":5,"messages":[{"content":null}]}`,
		`{"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":-3}`,
		`{"messages":"nope"}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	s := &Server{cfg: Config{CompletionTokens: 16, CachedTokens: 8}}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := parseChat(body)
		if err != nil {
			return
		}
		u := s.usageFor(openAI, r)
		assert.GreaterOrEqual(t, u.prompt, 1)
		assert.LessOrEqual(t, u.cached, u.prompt)
		assert.GreaterOrEqual(t, u.completion, 1)
		assert.LessOrEqual(t, u.completion, 16)
		assert.LessOrEqual(t, u.prompt, (len(body)+3)/4+1, "the prompt estimate never exceeds the body's bytes/4")
	})
}

func BenchmarkChatCompletion(b *testing.B) {
	benchmarkServer(b, chatBody)
}

func BenchmarkChatCompletionStream(b *testing.B) {
	benchmarkServer(b, `{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`)
}

func benchmarkServer(b *testing.B, body string) {
	s, err := NewServer(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
