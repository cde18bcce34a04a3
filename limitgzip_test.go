package httpguard

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gzipAPI is a loopback server behind a Limiter of 20,000 tokens a minute
// that never waits, recording the bodies it receives as they came and the
// model each request was keyed by.
type gzipAPI struct {
	url    string
	client *http.Client
	mu     sync.Mutex
	bodies [][]byte // as received
	models []string // as the Limiter's Key was given them
}

func newGzipAPI(t *testing.T, c LimitConfig) *gzipAPI {
	api := &gzipAPI{}
	c.TokensPerMinute, c.MaxWait = 20000, -1
	c.Key = func(req *http.Request, model string) string {
		api.mu.Lock()
		api.models = append(api.models, model)
		api.mu.Unlock()
		return req.URL.Host + " " + model
	}
	clk := newFakeClock(moveOn)
	srv, client, _ := newLimitedServer(t, newTestLimiter(t, c, clk), clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		assert.NoError(t, err)
		api.mu.Lock()
		api.bodies = append(api.bodies, b)
		api.mu.Unlock()
		io.WriteString(w, `{"id":"x"}`)
	})
	api.url, api.client = srv.URL, client
	return api
}

// send posts body with the Content-Encoding values encodings (under the
// header's canonical name, else under the name given) to the chat
// endpoint, with a GetBody unless getBody is false: the Limiter then reads
// the Body itself.
func (api *gzipAPI) send(t *testing.T, body []byte, getBody bool, name string, encodings ...string) (int, error) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if !getBody {
		r = struct{ io.Reader }{r}
	}
	req, err := http.NewRequest(http.MethodPost, api.url+"/v1/chat/completions", r)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if len(encodings) > 0 {
		req.Header[name] = encodings
	}
	resp, err := api.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// bigChat is a chat request of 19,000 tokens by the Limiter's estimate:
// 15,000 of prompt and 4,000 of output.
func bigChat(model string) string {
	return `{"model":"` + model + `","max_tokens":4000,"messages":[{"role":"user","content":"` + promptText + `"}]}`
}

// A gzip body (Content-Encoding: gzip) is no JSON as written: the Limiter
// keyed it without its model and counted it no tokens, so that five
// requests of 19,000 tokens each went at once under a limit of 20,000 a
// minute, where the same bodies uncompressed are refused after the first.
// A caller (or an SDK) that compresses its bodies escaped the token limit.
// A gzip body is read decompressed, and counted as the same body
// uncompressed; the server still receives the compressed bytes, whole.
func TestLimiterCountsTheTokensOfAGzipBody(t *testing.T) {
	for _, getBody := range []bool{true, false} {
		for _, enc := range []string{"gzip", "x-gzip", "GZIP"} {
			api := newGzipAPI(t, LimitConfig{})
			body := gzipOf(t, bigChat("m"))
			code, err := api.send(t, body, getBody, "Content-Encoding", enc)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
			for range 4 {
				_, err := api.send(t, body, getBody, "Content-Encoding", enc)
				require.ErrorIs(t, err, ErrRateLimited, "%s, GetBody %v", enc, getBody)
				var le *LimitError
				require.ErrorAs(t, err, &le)
				assert.Equal(t, ThrottleTokens, le.Reason)
			}
			assert.Equal(t, [][]byte{body}, api.bodies, "the server received the compressed body as it was sent (%s, GetBody %v)", enc, getBody)
			assert.Equal(t, []string{"m", "m", "m", "m", "m"}, api.models, "keyed by the model the body names (%s, GetBody %v)", enc, getBody)
		}
	}
}

// Content-Encoding is read as a server reads it: under any spelling of
// the name (net/http sends a name set in the map directly as it is) and
// across all its values.
func TestLimiterReadsContentEncodingAsAServerDoes(t *testing.T) {
	for _, getBody := range []bool{true, false} {
		api := newGzipAPI(t, LimitConfig{})
		body := gzipOf(t, bigChat("m"))
		code, err := api.send(t, body, getBody, "content-encoding", "gzip")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		_, err = api.send(t, body, getBody, "content-encoding", "gzip")
		require.ErrorIs(t, err, ErrRateLimited, "a lower-case name, GetBody %v", getBody)
		// Two values are no gzip read once: the first takes the whole
		// burst of the key of no model, the second is refused.
		small := gzipOf(t, `{"model":"m","max_tokens":10,"messages":[]}`)
		code, err = api.send(t, small, getBody, "Content-Encoding", "identity", "gzip")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		_, err = api.send(t, small, getBody, "Content-Encoding", "identity", "gzip")
		require.ErrorIs(t, err, ErrRateLimited, "identity then gzip, GetBody %v", getBody)
		assert.Equal(t, []string{"m", "m", "", ""}, api.models, "GetBody %v", getBody)
	}
}

// A body that is compressed in a way the Limiter cannot read was counted
// no tokens, as a body that is no JSON: another coding (br, zstd,
// deflate), gzip twice, a gzip body that decompresses to more than
// MaxBufferedBody or that is longer than it compressed, a body labelled
// gzip that is none. A server that decompresses it may run a prompt of
// any length: it is counted as a JSON body too long to read is, the
// whole burst, and keyed without a model.
func TestLimiterCountsACompressedBodyItCannotReadAsTheWholeBurst(t *testing.T) {
	small := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	long := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"` + strings.Repeat("a", 8192) + `"}]}`
	twice := gzipOf(t, string(gzipOf(t, small)))
	for _, c := range []struct {
		name      string
		body      []byte
		encodings []string
	}{
		{"br", gzipOf(t, small), []string{"br"}},
		{"zstd", gzipOf(t, small), []string{"zstd"}},
		{"deflate", gzipOf(t, small), []string{"deflate"}},
		{"gzip twice", twice, []string{"gzip, gzip"}},
		{"gzip twice in two values", twice, []string{"gzip", "gzip"}},
		{"past MaxBufferedBody decompressed", gzipOf(t, long), []string{"gzip"}},
		{"past MaxBufferedBody compressed", paddedGzip(t, small, 4096), []string{"gzip"}},
		{"labelled gzip, not gzip", []byte("\x1f\x8b not gzip " + small), []string{"gzip"}},
		{"labelled gzip, no JSON", []byte("hello " + small), []string{"gzip"}},
		{"labelled gzip, JSON that does not parse", []byte(small[:40]), []string{"gzip"}},
		{"labelled br, JSON that does not parse", []byte(small[:40]), []string{"br"}},
		{"labelled gzip, cut short", gzipOf(t, small)[:40], []string{"gzip"}},
		{"labelled gzip, garbage after", append(gzipOf(t, small), "garbage"...), []string{"gzip"}},
	} {
		for _, getBody := range []bool{true, false} {
			api := newGzipAPI(t, LimitConfig{MaxBufferedBody: 4096})
			code, err := api.send(t, c.body, getBody, "Content-Encoding", c.encodings...)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
			_, err = api.send(t, c.body, getBody, "Content-Encoding", c.encodings...)
			require.ErrorIs(t, err, ErrRateLimited, "%s, GetBody %v: the first took the whole burst", c.name, getBody)
			assert.Equal(t, [][]byte{c.body}, api.bodies, "%s, GetBody %v: the server received the body as sent", c.name, getBody)
			assert.Equal(t, []string{"", ""}, api.models, "%s, GetBody %v: keyed without a model", c.name, getBody)
		}
	}
}

// A gzip body that decompresses to no JSON (an upload) is counted as that
// body uncompressed is, no tokens; one that is a JSON chat request as
// written, whatever its label, is read as written: no gzip, zstd or zlib
// stream is one (each starts with a byte that is neither JSON space nor
// '{'), and the header is not read for such a body, the hot path.
func TestLimiterReadsACompressedBodyAsTheSameBodyUncompressed(t *testing.T) {
	for _, getBody := range []bool{true, false} {
		api := newGzipAPI(t, LimitConfig{})
		upload := gzipOf(t, "--boundary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"+promptText)
		for range 3 {
			code, err := api.send(t, upload, getBody, "Content-Encoding", "gzip")
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, "GetBody %v", getBody)
		}
		for _, enc := range []string{"gzip", "br"} {
			code, err := api.send(t, []byte(`{"model":"n","max_tokens":10,"messages":[]}`), getBody, "Content-Encoding", enc)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, "GetBody %v", getBody)
		}
		assert.Equal(t, []string{"", "", "", "n", "n"}, api.models, "GetBody %v", getBody)
	}
}

// paddedGzip returns s compressed with gzip, after n empty blocks: it
// decompresses to s, from 5n bytes more.
func paddedGzip(t *testing.T, s string, n int) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	for range n {
		require.NoError(t, zw.Flush())
	}
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// A gzip bomb, a few KiB that decompress to 64 MiB, is read no further
// than MaxBufferedBody decompressed bytes: it is counted as a body too
// long to read, the whole burst, from the few KiB read, and sent whole.
func TestLimiterStopsAGzipBombAtMaxBufferedBody(t *testing.T) {
	var bomb bytes.Buffer
	bomb.Write(gzipOf(t, `{"model":"m","messages":[{"role":"user","content":"`))
	mib := gzipOf(t, strings.Repeat("a", 1<<20)) // gzip members in a row decompress to one body
	for range 64 {
		bomb.Write(mib)
	}
	bomb.Write(gzipOf(t, `"}]}`))
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000, MaxBufferedBody: 64 << 10}, newFakeClock(moveOn))
	for _, getBody := range []bool{true, false} {
		body := &countingReader{r: bytes.NewReader(bomb.Bytes())}
		req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", body)
		require.NoError(t, err)
		req.Header.Set("Content-Encoding", "gzip")
		var copies []*countingReader
		if getBody {
			req.GetBody = func() (io.ReadCloser, error) {
				copies = append(copies, &countingReader{r: bytes.NewReader(bomb.Bytes())})
				return io.NopCloser(copies[len(copies)-1]), nil
			}
		}

		send, _, model, toks, err := l.inspect(req)

		require.NoError(t, err)
		assert.Empty(t, model, "GetBody %v", getBody)
		assert.Equal(t, int64(20000), toks, "GetBody %v", getBody)
		read := body.n.Load()
		for _, c := range copies {
			read += c.n.Load()
		}
		assert.Less(t, read, int64(16<<10), "GetBody %v: compressed bytes read of %d", getBody, bomb.Len())
		sent, err := io.ReadAll(send.Body)
		require.NoError(t, err)
		send.Body.Close()
		assert.True(t, bytes.Equal(bomb.Bytes(), sent), "GetBody %v: the body sent is the one written", getBody)
	}
}

// An error reading the body, compressed, refuses the request with that
// error, as it refuses one sent as it is; it is not taken for a body that
// cannot be decompressed.
func TestLimiterRefusesAGzipBodyItCouldNotRead(t *testing.T) {
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000}, newFakeClock(moveOn))
	start := gzipOf(t, bigChat("m"))[:100]
	for _, getBody := range []bool{true, false} {
		failing := func() io.Reader { return io.MultiReader(bytes.NewReader(start), errReader{io.ErrClosedPipe}) }
		req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", failing())
		require.NoError(t, err)
		req.Header.Set("Content-Encoding", "gzip")
		if getBody {
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(failing()), nil }
		}
		_, _, _, _, err = l.inspect(req)
		require.ErrorIs(t, err, io.ErrClosedPipe, "GetBody %v", getBody)
		assert.ErrorContains(t, err, "httpguard: limiter: reading the request body")
	}
}
