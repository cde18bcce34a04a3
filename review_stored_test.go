package httpguard

import (
	"encoding/json"
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

// billResponsesChain answers as OpenAI's Responses API does and adds to
// billed what it bills: a request naming a previous_response_id is billed
// the whole chain's input and output as its own input tokens, besides its
// own input ("all previous input tokens for responses in the chain are
// billed as input tokens"), priced at testPrices.
func billResponsesChain(billed *atomic.Int64) func(http.ResponseWriter, *http.Request, []byte) {
	var mu sync.Mutex
	chain := map[string]int64{} // response ID: the tokens a follow-up carries
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		var r struct {
			Previous  string `json:"previous_response_id"`
			MaxOutput int64  `json:"max_output_tokens"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		input := int64(len(body)) + chain[r.Previous]
		id := fmt.Sprintf("resp_%d", len(chain)+1)
		chain[id] = input + r.MaxOutput
		mu.Unlock()
		u := Usage{InputTokens: input, OutputTokens: r.MaxOutput}
		billed.Add(int64(testPrices["m"].Cost(u)))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"object":"response","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}],`+
			`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"total_tokens":%d}}`, id, input, r.MaxOutput, input+r.MaxOutput)
	}
}

// A Responses request that continues a stored response (previous_response_id)
// is billed the whole conversation as input, which its body does not hold:
// its bytes are no bound of its prompt. Ten follow-ups of one long
// response, sent at once, each reserve a few hundred tokens and are each
// billed twenty thousand; the Limit must still hold: refused without a
// StoredInputReserve, reserved with one.
func TestBudgetLimitHoldsAgainstAResponsesChain(t *testing.T) {
	for _, reserve := range []int64{0, 25_000} {
		t.Run(fmt.Sprint("StoredInputReserve=", reserve), func(t *testing.T) {
			served := budgetAgainstAResponsesChain(t, reserve)
			if reserve > 0 {
				assert.Positive(t, served, "a follow-up within the Limit is sent")
			} else {
				assert.Zero(t, served)
			}
		})
	}
}

// budgetAgainstAResponsesChain sends ten follow-ups at once and returns
// how many were served.
func budgetAgainstAResponsesChain(t *testing.T, storedInputReserve int64) (served int32) {
	var billed atomic.Int64
	bill := billResponsesChain(&billed)
	follow := inFlightAtOnce(10, bill)
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), "previous_response_id") {
			follow(w, r, body)
			return
		}
		bill(w, r, body)
	})
	first := `{"model":"m","max_output_tokens":100,"input":"` + strings.Repeat("w", 20_000) + `"}`
	b := newTestBudget(t, BudgetConfig{Limit: 3 * reservation(first, 100), StoredInputReserve: storedInputReserve})
	client := api.client(t, b)
	resp, err := client.Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(first))
	require.NoError(t, err)
	var answer struct{ ID string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	body := `{"model":"m","max_output_tokens":100,"previous_response_id":"` + answer.ID + `","input":"go on"}`
	served = postAtOnce(t, client, api.srv.URL+"/v1/responses", body, 10)
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
	return served
}

// inFlightAtOnce has handle answer once n requests have arrived (or
// 200 ms passed), as a slow model answers them: all are in flight at once.
func inFlightAtOnce(n int32, handle func(http.ResponseWriter, *http.Request, []byte)) func(http.ResponseWriter, *http.Request, []byte) {
	var arrived atomic.Int32
	all := make(chan struct{})
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(200 * time.Millisecond):
		}
		handle(w, r, body)
	}
}

// postAtOnce posts body to url n times at once through client, and
// returns how many were served; the others must have been refused.
func postAtOnce(t *testing.T, client *http.Client, url, body string, n int) int32 {
	var wg sync.WaitGroup
	var served atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				assert.True(t, IsRefusal(err), "%v", err)
				return
			}
			served.Add(1)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	return served.Load()
}

func TestBudgetRefusesRequestsContinuingStoredInput(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	for _, stored := range []string{
		`"previous_response_id":"resp_1",`,
		`"conversation":"conv_1",`,
		`"conversation":{"id":"conv_1"},`,
		`"prompt":{"id":"pmpt_1","version":"2"},`,
		`"previous_\u0072esponse_id":"resp_1",`,
	} {
		body := `{"model":"m","max_output_tokens":100,` + stored + `"input":"go on"}`
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
		require.ErrorIs(t, err, ErrUnknownModel, stored)
		assert.ErrorContains(t, err, "BudgetConfig.StoredInputReserve")
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	for _, plain := range []string{`"previous_response_id":null,`, `"conversation":null,`, `"prompt":"a legacy completion",`} {
		readThrough(t, api, b, "/v1/responses", `{"model":"m","max_output_tokens":100,`+plain+`"input":"go on"}`)
	}
}

// An OpenAI Responses request's input may reference items the provider
// stored ({"type": "item_reference", "id": …}, the type optional), which
// it bills as input as a previous_response_id's: the body holds their
// IDs, not their tokens. Ten requests at once, each referencing a stored
// message of twenty thousand tokens, must not have the provider bill past
// the Limit: without a StoredInputReserve they are refused, as a
// previous_response_id is.
func TestBudgetLimitHoldsAgainstInputItemReferences(t *testing.T) {
	const stored = 20_000 // the tokens of the item each request references
	api, billed := storedInputAPI(t, `"id":"msg_`, stored)
	body := `{"model":"m","max_output_tokens":100,"input":[{"type":"item_reference","id":"msg_1"},{"role":"user","content":"go on"}]}`
	b := newTestBudget(t, BudgetConfig{Limit: 3 * reservation(body, 100)})
	postAtOnce(t, api.client(t, b), api.srv.URL+"/v1/responses", body, 10)
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
