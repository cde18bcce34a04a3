package httpguard

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

// batchAPI is a loopback batch endpoint: it answers a batch queued,
// without usage, and bills, as the batch runs, each of its requests
// (1,000 of 1,000 tokens in, 1,000 out, at price p), which the body does
// not hold: OpenAI's batches run the requests of a file uploaded before,
// Anthropic's the requests of its array.
func batchAPI(t *testing.T, p Price, billed *atomic.Int64) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		billed.Add(1000 * int64(p.Cost(Usage{InputTokens: 1000, OutputTokens: 1000})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"batch_1","object":"batch","status":"validating"}`)
	})
}

// Was a bug: a batch's body names no model, and is refused, unless it
// does: LiteLLM's managed batches route a batch by a model in its body
// (the SDKs' extra_body={"model": …}). The Budget then priced it as one
// chat request of OutputReserve tokens and charged that reservation, as
// its answer reports no usage, while the provider billed every request of
// the batch: $2 a batch against a Limit of $0.50. A body with a batch's
// field (input_file_id, or Anthropic's requests) starts a job, refused
// unsent as Assistants runs and fine-tuning jobs are.
func TestBudgetRefusesBatchesThatNameAModel(t *testing.T) {
	prices := PriceTable{"gpt-4o-batch": {Input: Dollar, Output: Dollar}, "claude-batch": {Input: Dollar, Output: Dollar}}
	for _, c := range []struct{ path, body, field string }{
		{"/v1/batches", `{"model":"gpt-4o-batch","input_file_id":"file-abc","endpoint":"/v1/chat/completions","completion_window":"24h"}`, "input_file_id"},
		{"/v1/messages/batches", `{"model":"claude-batch","max_tokens":1,"requests":[{"custom_id":"a","params":{"model":"claude-batch","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}}]}`, "requests"},
	} {
		var billed atomic.Int64
		api := batchAPI(t, prices["gpt-4o-batch"], &billed)
		b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent, Prices: prices})
		postOrRefused(t, api.client(t, b), api.srv.URL+c.path, c.body, 3, ErrUnknownModel, "request starts a job ("+c.field+": an Assistants run, a fine-tuning job or a batch)")
		assert.Zero(t, api.hits.Load(), "refused unsent: %s", c.path)
		assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
	}
}
