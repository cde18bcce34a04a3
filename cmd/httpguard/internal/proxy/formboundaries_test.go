package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a hunt): a form whose Content-Type repeats its
// boundary, which mime refuses, was read for a destination with every
// boundary it named, and each boundary mime/multipart gave up on read
// every line of the body again. A tenant's one request, a 61 KB
// Content-Type naming 4,467 boundaries over a 4 MiB body of
// Content-Disposition lines, held a core for over four minutes before
// anything was sent (stopped there: 0.13 s a boundary, ten minutes in
// all); any tenant may send a form to a free endpoint. The body is read
// with the first and the last boundary, which parsers read, and its
// lines once: 56 ms for 2 boundaries, 61 ms for 5,500.
func TestAFormNamingManyBoundariesIsReadOnce(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"input_tokens":1}`)
	}))
	t.Cleanup(up.Close)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Tenants: []Tenant{{Name: "free", KeySHA256: keyHash("vk-free")}}})
	body := strings.Repeat("Content-Disposition: form-data; name=x\r\n", (128<<10)/40)
	took := func(boundaries int) time.Duration {
		var ct strings.Builder
		ct.WriteString("multipart/form-data")
		for i := range boundaries {
			fmt.Fprintf(&ct, "; boundary=%d", i)
		}
		start := time.Now()
		resp, out := r.post(t, "/v1/messages/count_tokens", body, "Authorization", "Bearer vk-free", "Content-Type", ct.String())
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
		return time.Since(start)
	}
	took(2) // warm: the connection
	one, many := took(2), took(1000)
	assert.Less(t, many, 4*one+time.Second, "1,000 boundaries cost as much as 2 (%v for 2)", one)
}
