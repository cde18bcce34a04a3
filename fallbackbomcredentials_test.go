package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A body whose credentials follow a UTF-8 byte order mark holds them for a
// server that skips the mark, as Python's json.loads does for a body given
// as bytes (FastAPI's servers): it goes to no target but the primary,
// short or longer than MaxBufferedBody (read a chunk at a time). The mark
// hid them: the body was no JSON object to the check, and the primary's
// key went to the second target.
func TestFallbackFindsCredentialsAfterAByteOrderMark(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	for _, long := range []bool{false, true} {
		primary := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
		second := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, `{}`) })
		c := FallbackConfig{Targets: []Target{{Name: "primary", BaseURL: primary.URL + "/v1"}, {Name: "second", BaseURL: second.URL + "/v1"}}}
		body := bom + `{"api_key":"sk-primary","model":"m","messages":[]}`
		if long {
			c.MaxBufferedBody = 16
		}
		f, err := NewFallback(c)
		require.NoError(t, err)
		resp, err := clientFor(t, f).Post(primary.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()

		assert.Equal(t, "primary", resp.Header.Get(TargetHeader), "long %v", long)
		assert.Zero(t, second.hits.Load(), "long %v: the primary's key reached the second target", long)
	}
}
