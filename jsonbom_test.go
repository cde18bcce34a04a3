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

// A JSON answer that begins with a UTF-8 byte order mark (a PHP relay
// whose source files carry one writes it before its output) is read by
// the decoders of most SDKs: RFC 8259 lets a parser ignore it, Python's
// json.loads and the Fetch API's json() skip it. Its usage was lost: the
// reservation was charged, less than an answer past OutputReserve
// reported. The mark is now read as the whitespace before the answer.
func TestBudgetReadsAJSONAnswerAfterAByteOrderMark(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	answer := `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":20,"completion_tokens":50000}}`
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream ", stream), func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, bom+answer)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: 1000 * Dollar, OutputReserve: 100, OnSettle: func(s Settlement) { got = s }})
			read := readThrough(t, api, b, "/v1/chat/completions", fmt.Sprintf(`{"model":"m","stream":%v,"messages":[]}`, stream))
			assert.Equal(t, bom+answer, read)
			require.True(t, got.UsageKnown)
			assert.Equal(t, testPrices["m"].Cost(Usage{InputTokens: 20, OutputTokens: 50_000}), got.Charged, "reserved %v", got.Reserved)
		})
	}
}

// The mark is read whatever the reads that split it; a part of one, or
// one anywhere but first, is no JSON.
func TestUsageReadsAJSONAnswerAfterAByteOrderMarkWhateverTheReads(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	for _, body := range []string{bom + openAIJSON, bom + "\n" + openAIJSON} {
		for _, size := range []int{1, 2, 4, len(body)} {
			_, rep := observe(t, "application/json", chunked([]byte(body), size))
			assert.True(t, rep.ok, "reads of %d bytes", size)
			assert.Equal(t, Usage{InputTokens: 19, CachedInputTokens: 3, OutputTokens: 10}, rep.u, "reads of %d bytes", size)
		}
	}
	for _, body := range []string{"\xef\xbb" + openAIJSON, "\xef" + openAIJSON, "\n" + bom + openAIJSON, bom + bom + openAIJSON} {
		for _, size := range []int{1, len(body)} {
			_, rep := observe(t, "application/json", chunked([]byte(body), size))
			assert.False(t, rep.ok, "%q in reads of %d bytes", body[:8], size)
		}
	}
	_, rep := observe(t, "application/json", strings.NewReader(bom))
	assert.False(t, rep.ok, "a mark alone")
}
