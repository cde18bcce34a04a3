package httpguard

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gzipOf returns s compressed with gzip, one member.
func gzipOf(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// postEncoded sends body with the Content-Encoding values encodings
// through r's Fallback and returns the target that answered.
func (r *mapRig) postEncoded(t *testing.T, body []byte, encodings ...string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header["Content-Encoding"] = encodings
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get(TargetHeader)
}

// A gzip body's credentials were not seen, its bytes being no JSON: it
// went to the first target without Models, api_key and all, to be
// decompressed there by a server that reads such bodies. It is read
// decompressed for them.
func TestFallbackSendsAGzipBodyHoldingCredentialsToNoOtherTarget(t *testing.T) {
	for _, body := range []string{
		`{"model":"other","messages":[],"api_key":"sk-primary-body"}`,
		`{"model":"other","messages":[],"user_config":{"model_list":[]}}`,
		`{"model":"other","customer_credentials":{"openai":{"api_key":"sk-primary"}}}`,
	} {
		for _, encoding := range []string{"gzip", "x-gzip", " GZIP "} {
			r := newMapRig(t)
			assert.Equal(t, "primary", r.postEncoded(t, gzipOf(t, body), encoding), "%s %s", encoding, body)
			assert.Zero(t, len(r.second.received()), body)
			assert.Zero(t, len(r.third.received()), "%s %s", encoding, body)
		}
	}
}

// A gzip body without credentials still goes to a target without Models,
// as it was compressed.
func TestFallbackSendsAGzipBodyWithoutCredentialsToTheNextTarget(t *testing.T) {
	r := newMapRig(t)
	gz := gzipOf(t, `{"model":"other","messages":[],"api_key":null,"max_tokens":5}`)
	assert.Equal(t, "third", r.postEncoded(t, gz, "gzip"))
	assert.Zero(t, len(r.second.received()), "its model cannot be mapped")
	assert.Equal(t, []string{string(gz)}, r.third.received())
}

// A body that cannot be read for credentials goes to no target but the
// primary: one compressed in a way not read here (Brotli, zstd, deflate,
// gzip twice), one that says gzip and is not, and one that decompresses to
// more than MaxBufferedBody bytes. A Content-Encoding in two values, or
// under a name spelled by hand, counts whole.
func TestFallbackSendsABodyItCannotReadForCredentialsToNoOtherTarget(t *testing.T) {
	plain := `{"model":"other","messages":[],"api_key":"sk-primary-body"}`
	opaque := append([]byte{0x1b, 0x3a, 0x00, 0xf8}, plain...) // stands for compressed bytes: no JSON
	for _, c := range []struct {
		name      string
		body      []byte
		encodings []string
	}{
		{"br", opaque, []string{"br"}},
		{"zstd", opaque, []string{"zstd"}},
		{"deflate", opaque, []string{"deflate"}},
		{"gzip twice", gzipOf(t, string(gzipOf(t, plain))), []string{"gzip, gzip"}},
		{"gzip in two values", gzipOf(t, string(gzipOf(t, plain))), []string{"gzip", "gzip"}},
		{"identity then gzip", gzipOf(t, plain), []string{"identity", "gzip"}},
		{"no gzip after all", []byte(plain), []string{"gzip"}},
		{"too long decompressed", gzipOf(t, `{"model":"other","messages":[{"content":"`+strings.Repeat("a", DefaultMaxBufferedBody)+`"}]}`), []string{"gzip"}},
	} {
		r := newMapRig(t)
		assert.Equal(t, "primary", r.postEncoded(t, c.body, c.encodings...), c.name)
		assert.Zero(t, len(r.second.received()), c.name)
		assert.Zero(t, len(r.third.received()), c.name)
	}
	// net/http sends a header under the name it is written with
	r := newMapRig(t)
	req, err := http.NewRequest(http.MethodPost, r.primary.URL+"/chat/completions", bytes.NewReader(gzipOf(t, plain)))
	require.NoError(t, err)
	req.Header["content-encoding"] = []string{"gzip"}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "primary", resp.Header.Get(TargetHeader))
	assert.Zero(t, len(r.third.received()))
}

// A gzip bomb costs no more than MaxBufferedBody decompressed bytes: the
// check stops there, having read a few KiB of a body that decompresses to
// 64 MiB, and takes the body to hold credentials.
func TestBodyHoldsCredentialsStopsAGzipBombAtItsLimit(t *testing.T) {
	var bomb bytes.Buffer
	bomb.Write(gzipOf(t, `{"model":"m","messages":[],"x":"`))
	mib := gzipOf(t, strings.Repeat("a", 1<<20)) // gzip members in a row decompress to one body
	for range 64 {
		bomb.Write(mib)
	}
	bomb.Write(gzipOf(t, `","api_key":"sk"}`))
	h := http.Header{"Content-Encoding": {"gzip"}}

	src := &sourceReader{r: bytes.NewReader(bomb.Bytes())}
	found, err := bodyHoldsCredentials(src, h, 64<<10)

	require.NoError(t, err)
	assert.True(t, found, "a body longer than the limit decompressed cannot be checked")
	assert.Less(t, src.n, int64(16<<10), "compressed bytes read of %d", bomb.Len())

	src = &sourceReader{r: bytes.NewReader(bomb.Bytes())}
	found, err = bodyHoldsCredentials(src, h, 80<<20)
	require.NoError(t, err)
	assert.True(t, found, "read whole, its api_key is found")
}

// An error reading the body is returned, not taken for credentials.
func TestBodyHoldsCredentialsReturnsTheBodysOwnError(t *testing.T) {
	for h, start := range map[string][]byte{"": []byte(`{"model":"m",`), "gzip": gzipOf(t, `{"model":"m","messages":[]}`)[:10]} {
		h := http.Header{"Content-Encoding": {h}}
		src := &sourceReader{r: io.MultiReader(bytes.NewReader(start), errReader{io.ErrClosedPipe})}
		_, err := bodyHoldsCredentials(src, h, 1<<20)
		assert.ErrorIs(t, err, io.ErrClosedPipe, h)
	}
}
