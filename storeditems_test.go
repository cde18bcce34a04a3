package httpguard

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An OpenAI Responses input may carry back a reasoning item by its id
// alone ({"type":"reasoning","id":"rs_…","summary":[]}, as the function
// calling loop appends response.output with store on): the provider
// looks the stored reasoning up and bills its tokens as input, yet the
// body holds only the id. Such an item has a type, so inputItems does not
// read it as a reference (request.go, inputItems.next / field): without a
// StoredInputReserve the request was not refused, as an item_reference or
// previous_response_id is, and was reserved by its bytes alone ($0.061
// billed under a $0.0015 Limit). A reasoning item with an id and without
// its encrypted_content is stored input now; one that carries its
// encrypted_content (store off) holds its reasoning in the body.
func TestBudgetReadsAReasoningItemByIDAsStoredInput(t *testing.T) {
	const stored = 20_000 // the reasoning tokens of the item each request carries back
	api, billed := storedInputAPI(t, `"id":"rs_`, stored)
	body := `{"model":"m","max_output_tokens":100,"input":[{"role":"user","content":"what is 6*7?"},` +
		`{"type":"reasoning","id":"rs_1","summary":[]},` +
		`{"type":"function_call","id":"fc_1","call_id":"call_1","name":"calc","arguments":"{}"},` +
		`{"type":"function_call_output","call_id":"call_1","output":"42"}]}`
	b := newTestBudget(t, BudgetConfig{Limit: 3 * reservation(body, 100)})
	postAtOnce(t, api.client(t, b), api.srv.URL+"/v1/responses", body, 10)
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v (sent %d)",
		Money(billed.Load()), b.Limit(), api.hits.Load())
	_, err := api.client(t, b).Post(api.srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, "StoredInputReserve")

	encrypted := strings.Replace(body, `"summary":[]}`, `"summary":[],"encrypted_content":"gAAAAB`+strings.Repeat("x", 200)+`"}`, 1)
	readThrough(t, newFakeAPI(t, answerUsage(1, 1)), newTestBudget(t, BudgetConfig{Limit: Dollar}), "/v1/responses", encrypted)
}

// OpenAI's multi-turn image editing carries a generated image back by id
// ({"type":"image_generation_call","id":"ig_…"}, the image stored): the
// model reads the image as image input, which gpt-4o-mini bills at 2,833
// tokens and 5,667 a tile, 36,835 tokens for a 1536×1024 image at high
// detail. An input_image part is reserved 48,200 tokens for exactly this
// reason (openAIImageTokenAllowance), but this item's type only starts
// with "image", so it got the generic 4,000: the reservation did not bound
// what was billed, and requests in flight at once passed the Limit ($0.11
// billed under $0.013). It is reserved as an OpenAI image now.
func TestBudgetReservesAnImageGenerationCallByIDAsAnImage(t *testing.T) {
	const image = 36_835 // gpt-4o-mini, a 1536×1024 image at high detail
	for name, body := range map[string]string{
		"no tools": `{"model":"m","max_output_tokens":100,"input":[{"role":"user","content":[{"type":"input_text","text":"Now make it look realistic"}]},` +
			`{"type":"image_generation_call","id":"ig_1"}]}`,
		"image_generation tool, one call": `{"model":"m","max_output_tokens":100,"max_tool_calls":1,"tools":[{"type":"image_generation"}],"input":[{"role":"user","content":[{"type":"input_text","text":"Now make it look realistic"}]},` +
			`{"type":"image_generation_call","id":"ig_1"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			var billed atomic.Int64
			api := newFakeAPI(t, inFlightAtOnce(10, func(w http.ResponseWriter, r *http.Request, body []byte) {
				input := int64(len(body)) + int64(strings.Count(string(body), `"id":"ig_`))*image
				billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: input, OutputTokens: 100})))
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"id":"resp_2","object":"response","status":"completed","output":[],`+
					`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":100,"total_tokens":%d}}`, input, input+100)
			}))
			cfg := BudgetConfig{ToolPrices: map[string]Money{"image_generation": 0}}
			// What one such request reserves.
			var reserved Money
			cfg.Limit, cfg.OnSettle = Dollar, func(s Settlement) { reserved = s.Reserved }
			readThrough(t, newFakeAPI(t, answerUsage(1, 1)), newTestBudget(t, cfg), "/v1/responses", body)
			one := testPrices["m"].Cost(Usage{InputTokens: int64(len(body)) + image, OutputTokens: 100})
			t.Logf("one request: reserved %v, billed %v", reserved, one)
			cfg.Limit, cfg.OnSettle = 3*reserved, nil
			b := newTestBudget(t, cfg)
			postAtOnce(t, api.client(t, b), api.srv.URL+"/v1/responses", body, 10)
			assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v (sent %d)",
				Money(billed.Load()), b.Limit(), api.hits.Load())
		})
	}
}

// storedInputAPI is an OpenAI Responses server that runs ten requests at
// once and bills each its body's bytes plus perID input tokens for each
// id that begins with idPrefix (`"id":"rs_`), the stored input it looks
// up, and 100 output tokens; billed is what it billed.
func storedInputAPI(t *testing.T, idPrefix string, perID int64) (api *fakeAPI, billed *atomic.Int64) {
	billed = new(atomic.Int64)
	api = newFakeAPI(t, inFlightAtOnce(10, func(w http.ResponseWriter, r *http.Request, body []byte) {
		input := int64(len(body)) + int64(strings.Count(string(body), idPrefix))*perID
		billed.Add(int64(testPrices["m"].Cost(Usage{InputTokens: input, OutputTokens: 100})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"resp_2","object":"response","status":"completed","output":[],`+
			`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":100,"total_tokens":%d}}`, input, input+100)
	}))
	return api, billed
}
