package httpguard

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A target that answers 503 before it read the upload leaves net/http
// writing the body after RoundTrip returned: the Fallback's request to the
// next target must not rewind the caller's reader while that write runs.
func TestAFallbackWaitsUntilTheTargetItLeftIsDoneWithTheBody(t *testing.T) {
	chat := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", 2<<20) + `"}]}`
	for _, c := range []struct {
		name    string
		retrier bool
	}{{name: "fallback"}, {name: "fallback+retrier", retrier: true}} {
		t.Run(c.name, func(t *testing.T) {
			s := newEarlyAnswerServer(t)
			base := strings.TrimSuffix(s.url(), "/chat/completions")
			f, err := NewFallback(FallbackConfig{Targets: []Target{{BaseURL: base}, {Name: "second", BaseURL: strings.TrimSuffix(base, "/v1") + "/v2"}}})
			require.NoError(t, err)
			layers := []Layer{f}
			if c.retrier {
				p := DefaultRetryPolicy()
				p.MaxRetries = 0
				r, _ := newTestRetrier(t, p)
				layers = append(layers, r)
			}

			resp, err := s.client(t, layers...).Do(seekingBodyRequest(t, s.url(), chat, int64(len(chat))))

			for i, got := range s.received() {
				assert.True(t, got == chat, "body received whole #%d has %d bytes of %d", i+1, len(got), len(chat))
			}
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode)
		})
	}
}
