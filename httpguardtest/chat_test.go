package httpguardtest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// Was a bug: the server answered any n with a slice of n choices and
// billed n times the completion: n = 9223372036854775807 panicked its
// handler (makeslice: len out of range) after billing a negative number of
// tokens, and n = 1e9 would have taken tens of gigabytes. Like OpenAI, it
// refuses n above 128, and bills nothing for it.
func TestServerRefusesMoreChoicesThanOpenAIAllows(t *testing.T) {
	s, err := NewServer(Config{})
	require.NoError(t, err)
	defer s.Close()
	for _, n := range []string{"129", "9223372036854775807"} {
		resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"m","n":`+n+`,"messages":[{"role":"user","content":"hi"}]}`))
		require.NoError(t, err, n)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, n)
	}
	resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","n":128,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 128, s.Stats().BillableCompletionTokens, "only the answered request is billed: 128 choices of 1 token")
}
