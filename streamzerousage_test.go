package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A relay that writes a usage of zeros on every chunk (its default) says
// nothing of what the provider billed. A stream that carried output before
// it was charged its reservation; one without output (an answer stopped
// at once, by a content filter or a stop sequence) was trusted, and
// charged nothing, though the provider billed its prompt; a JSON answer of
// the same usage was charged its reservation. Both are now.
func TestBudgetChargesAStreamWithoutOutputWhoseUsageIsZerosItsReservation(t *testing.T) {
	zeros := `"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`
	for name, stream := range map[string]string{
		"a chunk that stops":  `data: {"id":"1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":"content_filter"}],` + zeros + "}\n\ndata: [DONE]\n\n",
		"a usage chunk alone": `data: {"id":"1","object":"chat.completion.chunk","choices":[],` + zeros + "}\n\ndata: [DONE]\n\n",
		"an empty iterations": `data: {"id":"1","object":"chat.completion.chunk","choices":[],"usage":{"iterations":[]}}` + "\n\ndata: [DONE]\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprint(w, stream)
			})
			var got Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, OnSettle: func(s Settlement) { got = s }})
			body := `{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"` + strings.Repeat("x", 200) + `"}]}`
			readThrough(t, api, b, "/v1/chat/completions", body)
			require.NotZero(t, got.Reserved)
			assert.False(t, got.UsageKnown)
			assert.Equal(t, got.Reserved, got.Charged)
		})
	}
}
