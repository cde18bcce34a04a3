package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A stream whose Content-Type says JSON (a relay that labels every answer
// application/json) is decoded as a stream all the same by the SDKs that
// asked for one: openai-go's ssestream decodes any Content-Type as events,
// openai-python's Stream reads the body as events whatever it says. Read as
// JSON, its usage was lost: the reservation was charged, less than an
// answer past OutputReserve reported, and the usage-only chunk the Budget
// asked for reached a caller that did not. The answer to a streaming
// request is read as the body's first byte says: a JSON value, or events.
func TestBudgetReadsAStreamLabelledJSON(t *testing.T) {
	const output = 50_000
	content, done := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n", "data: [DONE]\n\n"
	usage := fmt.Sprintf("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", output, output+20)
	for _, lead := range []string{"", "\n", ": keep-alive\n\n"} {
		t.Run(fmt.Sprintf("%q first", lead), func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, lead+content+usage+done)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			read := readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`)
			assert.Equal(t, lead+content+done, read, "the stream without the usage-only chunk")
			require.True(t, got.UsageKnown)
			assert.Equal(t, testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: output}), got.Charged, "reserved %v", got.Reserved)
		})
	}
	// A streaming request answered with a JSON value is read as JSON,
	// whatever whitespace comes before it.
	for _, lead := range []string{"", "\n\n \n"} {
		api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, lead)
			answerUsage(20, 30)(w, r, body)
		})
		var got Settlement
		b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
		read := readThrough(t, api, b, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`)
		assert.True(t, strings.HasSuffix(read, `"completion_tokens":30}}`))
		require.True(t, got.UsageKnown)
		assert.Equal(t, Usage{InputTokens: 20, OutputTokens: 30}, got.Usage)
	}
}

// The answer is read the same whatever its reads, one byte at a time
// included, and closed at any point.
func TestUsageReaderSniffsAStreamLabelledJSONWhateverTheReads(t *testing.T) {
	stream := "\n" + openAIStream
	for _, tc := range []struct {
		body string
		want Usage
	}{
		{stream, Usage{InputTokens: 19, OutputTokens: 2}},
		{"\n " + openAIJSON, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}},
	} {
		for _, size := range []int{1, 2, 5, len(tc.body)} {
			var rep usageReport
			resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(chunked([]byte(tc.body), size))}
			var r usageReader
			r.observe(resp, reportFunc(func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok; rep.u.servedBy = 0 }), true)
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			assert.Equal(t, tc.body, string(got))
			assert.Equal(t, usageReport{calls: 1, u: tc.want, ok: true}, rep, "reads of %d bytes", size)
		}
	}
	// Closed before a byte was read, or after whitespace alone.
	for _, body := range []string{"", "\n\n"} {
		var rep usageReport
		resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body + openAIStream))}
		var r usageReader
		r.observe(resp, reportFunc(func(u Usage, ok bool) { rep.calls++; rep.ok = ok }), true)
		_, err := io.ReadFull(resp.Body, make([]byte, len(body)))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, usageReport{calls: 1}, rep)
	}
}

// The Budget's stripper hides the usage-only chunk of such a stream, and
// passes a JSON answer on as it is, whatever the reads and the caller's
// buffer.
func TestUsageChunkStripperReadsAStreamLabelledJSONWhateverTheReads(t *testing.T) {
	usageChunk := "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"
	require.Contains(t, openAIStream, usageChunk)
	for _, tc := range []struct{ body, want string }{
		{"\n" + openAIStream, "\n" + strings.Replace(openAIStream, usageChunk, "", 1)},
		{"\n " + openAIJSON, "\n " + openAIJSON},
	} {
		for split := 0; split <= len(tc.body); split += 3 {
			for _, bufSize := range []int{1, 7, 600, 5000} {
				var rep usageReport
				resp := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(&splitReader{data: []byte(tc.body), sizes: []int{split}})}
				var r usageReader
				r.observe(resp, reportFunc(func(u Usage, ok bool) { rep.calls++; rep.u, rep.ok = u, ok }), true)
				resp.Body = newUsageChunkStripper(resp.Body)
				var got []byte
				buf := make([]byte, bufSize)
				for {
					n, err := resp.Body.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						require.ErrorIs(t, err, io.EOF)
						break
					}
				}
				require.NoError(t, resp.Body.Close())
				require.Equal(t, tc.want, string(got), "first read %d bytes, buffer %d", split, bufSize)
				require.Equal(t, 1, rep.calls)
				require.True(t, rep.ok, "first read %d bytes, buffer %d", split, bufSize)
				require.Equal(t, int64(19), rep.u.InputTokens)
			}
		}
	}
}
