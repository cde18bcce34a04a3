package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keepAliveWait bounds how long a caller waits for a keep-alive comment
// the upstream flushed: it passes at once, and the bound only ends a test
// that would otherwise hang.
const keepAliveWait = time.Second

// readsUntil reads r in the background and reports, on the channel it
// returns, once what was read contains want (true), or r ended (false).
func readsUntil(r io.Reader, want string) <-chan bool {
	found := make(chan bool, 1)
	go func() {
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if strings.Contains(string(got), want) {
				found <- true
				io.Copy(io.Discard, r)
				return
			}
			if err != nil {
				found <- false
				return
			}
		}
	}()
	return found
}

// Was a bug: with stream_options.include_usage added, a bare SSE comment
// line (": keep-alive", no blank line after it) was held back with the
// event it might begin until that event ended, so a keep-alive the
// upstream sent while the model thought reached the caller only with the
// next chunk: proxies and SDKs whose idle timeouts it is sent against
// timed out. Comment lines that begin an event pass as they come.
func TestBudgetPassesAKeepAliveCommentOnAtOnce(t *testing.T) {
	for name, comment := range map[string]string{
		"bare":            ": keep-alive\n",
		"bare, CRLF":      ": keep-alive\r\n",
		"two":             ":\n: keep-alive\n",
		"with a blank":    ": keep-alive\n\n",
		"none, the chunk": "",
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n"+comment)
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
			})
			b := newTestBudget(t, BudgetConfig{Limit: 100 * Dollar})
			resp, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions", "application/json",
				strings.NewReader(`{"model":"m","stream":true,"max_tokens":10,"messages":[]}`))
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Contains(t, api.lastBody(), `"include_usage":true`)
			want := comment
			if want == "" {
				want = "\"usage\":null}\n\n"
			}
			select {
			case found := <-readsUntil(resp.Body, want):
				assert.True(t, found, "the stream ended without %q", want)
			case <-time.After(keepAliveWait):
				t.Fatalf("%q not read within %v of being flushed", want, keepAliveWait)
			}
		})
	}
}

// A comment line that begins the usage-only chunk the Budget asked for
// reaches the caller; the chunk does not.
func TestBudgetStripsAUsageChunkAfterAKeepAliveComment(t *testing.T) {
	for _, nl := range []string{"\n", "\r\n", "\r"} {
		for _, arrive := range []int{1, 3, 7, 1 << 20} {
			t.Run(fmt.Sprintf("%q, by %d", nl, arrive), func(t *testing.T) {
				chunk := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}" + nl + nl
				usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}" + nl + nl
				done := "data: [DONE]" + nl + nl
				stream := chunk + ": keep-alive" + nl + usage + done
				got, err := io.ReadAll(newUsageChunkStripper(io.NopCloser(chunked([]byte(stream), arrive))))
				require.NoError(t, err)
				assert.Equal(t, chunk+": keep-alive"+nl+done, string(got))
			})
		}
	}
}
