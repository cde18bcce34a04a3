package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An OpenAI Responses request's input may reference items the provider
// stored ({"type": "item_reference", "id": …}, the type optional), which
// it bills as input as a previous_response_id's: the body holds their
// IDs, not their tokens. Ten requests at once, each referencing a stored
// message of twenty thousand tokens, must not have the provider bill past
// the Limit: without a StoredInputReserve they are refused, as a
// previous_response_id is.
func TestBudgetLimitHoldsAgainstInputItemReferences(t *testing.T) {
	const stored = 20_000 // the tokens of the item each request references
	var billed atomic.Int64
	var arrived atomic.Int32
	all := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if arrived.Add(1) == 10 {
			close(all)
		}
		select { // all in flight at once, as a slow model answers them
		case <-all:
		case <-time.After(200 * time.Millisecond):
		}
		input := int64(len(body)) + int64(strings.Count(string(body), `"id":"msg_`))*stored
		billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: input, OutputTokens: 100})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"resp_2","object":"response","status":"completed","output":[],`+
			`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":100,"total_tokens":%d}}`, input, input+100)
	})
	body := `{"model":"m","max_output_tokens":100,"input":[{"type":"item_reference","id":"msg_1"},{"role":"user","content":"go on"}]}`
	b := newTestBudget(t, BudgetConfig{Limit: 3 * reservation(body, 100)})
	client := api.client(t, b)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
			if err != nil {
				assert.True(t, IsRefusal(err), "%v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
}

func TestBudgetRefusesInputItemReferences(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	for _, ref := range []string{
		`{"type":"item_reference","id":"msg_1"}`,
		`{"id":"msg_1"}`, // the type is optional
		`{"id":"msg_1","type":null}`,
		`{"type":"item_\u0072eference","id":"msg_1"}`,
		`{"Type":"item_reference","id":"msg_1"}`, // a decoder folding keys reads it so
	} {
		body := `{"model":"m","max_output_tokens":100,"input":[{"role":"user","content":"hi"},` + ref + `]}`
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
		require.ErrorIs(t, err, ErrUnknownModel, ref)
		assert.ErrorContains(t, err, "BudgetConfig.StoredInputReserve", ref)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	for _, plain := range []string{
		`"input":[{"role":"user","content":"hi"},{"type":"message","role":"assistant","id":"msg_1","content":[{"type":"output_text","text":"hello"}]}]`,
		`"input":[{"type":"function_call_output","call_id":"call_1","output":"42"}]`,
		`"input":"hi"`,
		`"input":["a","b"]`, // embeddings
		`"input":[{"text":"a sunset"},{"image":"https://example.com/a.jpg"}]`, // Jina's multimodal embeddings
	} {
		readThrough(t, api, b, "/v1/responses", `{"model":"m","max_output_tokens":100,`+plain+`}`)
	}
	// With a reserve, a reference is reserved for as the reserve says.
	b = newTestBudget(t, BudgetConfig{Limit: Dollar, StoredInputReserve: 1000})
	readThrough(t, api, b, "/v1/responses", `{"model":"m","max_output_tokens":100,"input":[{"type":"item_reference","id":"msg_1"}]}`)
}
