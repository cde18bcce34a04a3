package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A stream names its model in every chunk, and SDKs read different ones:
// openai-python's stream accumulator keeps the first chunk's model
// (_convert_initial_chunk_into_snapshot; later chunks update only usage
// and system_fingerprint), where a reader of each chunk, as the scanner
// was, takes the last. A relay whose chunks disagree (a mid-stream
// fallback, or a usage chunk written by the relay itself) is charged at
// the dearer of the two, as an answer whose decoders read two models is.
func TestBudgetChargesTheDearerOfTheModelsAStreamsChunksName(t *testing.T) {
	for _, tc := range []struct{ name, usageChunkModel string }{
		{"the usage chunk names the cheap model", `"model":"openai/gpt-4o-mini",`},
		{"the usage chunk names a model not listed", `"model":"",`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
				u := Usage{InputTokens: int64(len(body)), OutputTokens: 1000}
				billed.Add(int64(openRouterPrices[servedModel].Cost(u)))
				w.Header().Set("Content-Type", "text/event-stream")
				for range 3 {
					fmt.Fprintf(w, "data: {\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":null}]}\n\n", servedModel)
				}
				fmt.Fprintf(w, "data: {\"object\":\"chat.completion.chunk\",%s\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n",
					tc.usageChunkModel, u.InputTokens, u.OutputTokens)
			})
			var settled Settlement
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: openRouterPrices, OnSettle: func(s Settlement) { settled = s }})
			resp, err := api.client(t, b).Do(answerRequest(t, api.srv.URL, "/v1/chat/completions", true, "openai/gpt-4o-mini"))
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.True(t, settled.UsageKnown)
			assert.Equal(t, servedModel, settled.PricedAs)
			assert.GreaterOrEqual(t, int64(b.Spent()), billed.Load(), "charged %v, the relay billed %v", b.Spent(), Money(billed.Load()))
		})
	}
}

// A stream whose chunks all name one model, or whose later chunks name
// none, reads that model alone.
func TestStreamReadsOneModelWhenItsChunksAgree(t *testing.T) {
	chunk := "data: {\"model\":\"a\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n"
	// Azure OpenAI's first chunk names no model: "model":"".
	azure := "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n"
	for _, tt := range []struct{ name, head, tail string }{
		{"every chunk names it", "", "data: {\"model\":\"a\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"},
		{"the usage chunk names none", "", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"},
		{"azure's first chunk names none", azure, "data: {\"model\":\"a\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s streamScanner
			s.write([]byte(tt.head + chunk + chunk + tt.tail))
			u, ok := s.result(true)
			require.True(t, ok)
			assert.Equal(t, hashModel("a"), u.servedBy)
			assert.Zero(t, u.servedFolded)
			assert.Zero(t, u.servedFirst)
		})
	}
}
