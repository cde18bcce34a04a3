package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storedContextUpstream answers OpenAI's Responses and completions APIs
// and bills a request that names stored context (a previous response, a
// conversation, a stored prompt) for a million tokens of it, as OpenAI
// does, besides its own: what its usage reports only once it is run.
func storedContextUpstream(t *testing.T, bills *bill, sent *atomic.Int32) *httptest.Server {
	price := testPrices["deepseek-v3.2"]
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		var req map[string]json.RawMessage
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req) // the last of duplicate keys, keys in any case, as Go servers read them
		input := int64(12)
		for _, k := range []string{"previous_response_id", "conversation", "prompt"} {
			if v, ok := req[k]; ok && string(v) != "null" && (k != "prompt" || strings.HasSuffix(r.URL.Path, "/responses")) {
				input += 1_000_000
			}
		}
		bills.add(price.Cost(httpguard.Usage{InputTokens: input, OutputTokens: 3}))
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/responses") {
			io.WriteString(w, `{"id":"resp_2","object":"response","status":"completed","usage":{"input_tokens":`+itoa(input)+`,"output_tokens":3,"total_tokens":`+itoa(input+3)+`}}`)
			return
		}
		io.WriteString(w, `{"id":"cmpl_1","object":"text_completion","choices":[{"text":"hi"}],"usage":{"prompt_tokens":`+itoa(input)+`,"completion_tokens":3,"total_tokens":`+itoa(input+3)+`}}`)
	}))
	t.Cleanup(up.Close)
	return up
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// A Responses request naming stored context runs on tokens its body does
// not hold (a stored conversation can be a million tokens), which the
// Budget charges in full once usage reports them: N such requests at once
// pass the Limit by N stored contexts. Where a budget applies they are
// refused unsent, however a server's decoder would find the field.
func TestStoredContextIsRefusedWhereABudgetApplies(t *testing.T) {
	var bills bill
	var sent atomic.Int32
	up := storedContextUpstream(t, &bills, &sent)
	r := startBudgetedTenant(t, up.URL)
	refused := 0
	for body, field := range map[string]string{
		`{"model":"deepseek-v3.2","previous_response_id":"resp_1","input":"and then?"}`:                          "previous_response_id",
		`{"model":"deepseek-v3.2","previous_response_id":"resp_1","previous_response_id":null,"input":"x"}`:      "previous_response_id", // encoding/json keeps the value
		`{"model":"deepseek-v3.2","previous_response_id":null,"previous_response_id":"resp_1","input":"x"}`:      "previous_response_id", // the last wins
		`{"model":"deepseek-v3.2","Previous_Response_ID":"resp_1","input":"x"}`:                                  "previous_response_id", // Go servers fold case
		`{"model":"deepseek-v3.2","previous\u005fresponse_id":"resp_1","input":"x"}`:                             "previous_response_id",
		`{"model":"deepseek-v3.2","conversation":"conv_1","input":"x"}`:                                          "conversation",
		`{"model":"deepseek-v3.2","conversation":{"id":"conv_1"},"input":"x"}`:                                   "conversation",
		`{"model":"deepseek-v3.2","CONVERSATION":"conv_1","input":"x"}`:                                          "conversation",
		`{"model":"deepseek-v3.2","prompt":{"id":"pmpt_1","version":"2"},"input":"x"}`:                           "prompt",
		`{"prompt":{"id":"pmpt_1"},"input":"x"}`:                                                                 "prompt", // the stored prompt names the model
		`{"model":"deepseek-v3.2","Prompt":"pmpt_1","input":"x"}`:                                                "prompt",
		`{"model":"deepseek-v3.2","previous_response_id":"resp_1","background":false,"store":false,"input":"x"}`: "previous_response_id",
		`{"model":"deepseek-v3.2","cached_content":"cachedContents/abc","input":"x"}`:                            "cached_content", // a Gemini context cache, through LiteLLM
		`{"model":"deepseek-v3.2","Cached_Content":"cachedContents/abc","input":"x"}`:                            "cached_content",
		`{"model":"deepseek-v3.2","thread":{"type":"continue","previous_message_id":"msg_1"},"input":"x"}`:       "thread", // an Anthropic message thread
		`{"model":"deepseek-v3.2","Thread":{"type":"create","previous_message_id":"msg_1"},"input":"x"}`:         "thread", // not only create
		`{"model":"deepseek-v3.2","thread":"thr_1","input":"x"}`:                                                 "thread",
	} {
		resp, out := r.post(t, "/v1/responses", body, "Authorization", "Bearer vk-chat")
		refused++
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", body, out)
		typ, code, msg := errorOf(t, out)
		assert.Equal(t, "invalid_request_error", typ, body)
		assert.Equal(t, "stored_context_not_metered", code, body)
		assert.Equal(t, `"`+field+`"`, jsonString(t, out, "error", "param"), body)
		assert.Contains(t, msg, "a budget applies to this key", body)
		assert.Equal(t, "stored_context", r.lastLog(t, refused)["refusal"], body)
	}
	assert.Zero(t, sent.Load(), "nothing refused reached the upstream")

	// Null is absent; a legacy completion's prompt is its text.
	for path, body := range map[string]string{
		"/v1/responses":        `{"model":"deepseek-v3.2","previous_response_id":null,"conversation":null,"prompt":null,"cached_content":null,"thread":null,"input":"hi"}`,
		"/v1/chat/completions": `{"model":"deepseek-v3.2","thread":{"type":"create"},"messages":[{"role":"user","content":"hi"}]}`, // a thread it starts holds its whole prompt
		"/v1/completions":      `{"model":"deepseek-v3.2","prompt":"say hi","max_tokens":5}`,
	} {
		resp, out := r.post(t, path, body, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", body, out)
	}
	billed, spent := bills.get(), r.tenants[0].budget.Spent()
	assert.LessOrEqual(t, billed, spent, "the provider billed %v, the tenant's budget charged %v", billed, spent)
}

// The proxy-wide budget applies to every client as a tenant's does.
func TestStoredContextIsRefusedUnderTheProxyBudget(t *testing.T) {
	var bills bill
	var sent atomic.Int32
	up := storedContextUpstream(t, &bills, &sent)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1")}}, Prices: testPrices,
		Budget: &BudgetSpec{Limit: httpguard.Dollar}})
	resp, out := r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","previous_response_id":"resp_1","input":"x"}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
	_, code, _ := errorOf(t, out)
	assert.Equal(t, "stored_context_not_metered", code)
	assert.Zero(t, sent.Load())
}

// Without a budget there is nothing to pass: stored context goes through.
func TestStoredContextPassesWithoutABudget(t *testing.T) {
	var bills bill
	var sent atomic.Int32
	up := storedContextUpstream(t, &bills, &sent)
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1", URL: mustURL(t, up.URL+"/v1"), KeyEnv: "OPENAI_KEY"}}, Getenv: realKeys,
		Prices: testPrices, Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat")}}})
	for _, body := range []string{
		`{"model":"deepseek-v3.2","previous_response_id":"resp_1","input":"x"}`,
		`{"model":"deepseek-v3.2","conversation":"conv_1","input":"x"}`,
		`{"model":"deepseek-v3.2","prompt":{"id":"pmpt_1"},"input":"x"}`,
	} {
		resp, out := r.post(t, "/v1/responses", body, "Authorization", "Bearer vk-chat")
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", body, out)
	}
	assert.EqualValues(t, 3, sent.Load())
}

func TestReadsStoredContext(t *testing.T) {
	for _, c := range []struct {
		body      string
		responses string // what storedContext names on /responses
		elsewhere string // and on other paths
	}{
		{`{"model":"m","previous_response_id":"resp_1"}`, "previous_response_id", "previous_response_id"},
		{`{"model":"m","previous_response_id":""}`, "previous_response_id", "previous_response_id"},
		{`{"model":"m","previous_response_id":null}`, "", ""},
		{`{"model":"m","previous_response_id":"r","previous_response_id":null}`, "previous_response_id", "previous_response_id"},
		{`{"model":"m","pREVIOUS_response_id":"r"}`, "previous_response_id", "previous_response_id"},
		{`{"model":"m","previou\u017f_response_id":"r"}`, "previous_response_id", "previous_response_id"}, // ſ folds to s in encoding/json
		{`{"model":"m","\u0070revious_response_id":"r"}`, "previous_response_id", "previous_response_id"},
		{`{"model":"m","conversation":{"id":"conv_1"}}`, "conversation", "conversation"},
		{`{"model":"m","conversation":null}`, "", ""},
		{`{"model":"m","prompt":{"id":"pmpt_1"}}`, "prompt", "prompt"},
		{`{"model":"m","prompt":"text"}`, "prompt", ""},
		{`{"model":"m","prompt":["a","b"]}`, "prompt", ""},
		{`{"model":"m","prompt":"text","PROMPT":{"id":"p"}}`, "prompt", "prompt"},
		{`{"model":"m","prompt":{"id":"p"},"prompt":null}`, "prompt", "prompt"},
		{`{"model":"m","prompt":null}`, "", ""},
		{`{"model":"m","metadata":{"previous_response_id":"r","conversation":"c","prompt":{}}}`, "", ""},
		{`{"model":"m","input":"\"previous_response_id\":\"r\""}`, "", ""},
	} {
		f := mustReadRequest(t, c.body)
		assert.Equal(t, c.responses, f.storedContext(true), c.body)
		assert.Equal(t, c.elsewhere, f.storedContext(false), c.body)
	}
}

// FuzzStoredContextAgreesWithDecoders checks that readRequest finds each
// stored-context field wherever a server's decoder would: encoding/json
// (the last of repeated keys, matched in any case, null as absent) and a
// decoder that takes the last key spelled exactly (Python's json).
func FuzzStoredContextAgreesWithDecoders(f *testing.F) {
	f.Add([]byte(`{"model":"m","previous_response_id":"r"}`))
	f.Add([]byte(`{"model":"m","Conversation":{"id":"c"},"conversation":null}`))
	f.Add([]byte(`{"prompt":null,"PROMPT":{"id":"p"},"prompt":"x"}`))
	f.Add([]byte(`{"previou\u017f_response_id":"r","input":[{"prompt":1}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		facts, err := readRequest(body)
		if err != nil {
			return // refused as ambiguous before any of this
		}
		found := map[string]bool{"previous_response_id": facts.previousResponse, "conversation": facts.conversation, "prompt": facts.prompt != 0}
		var goView struct {
			PreviousResponseID *json.RawMessage `json:"previous_response_id"`
			Conversation       *json.RawMessage `json:"conversation"`
			Prompt             *json.RawMessage `json:"prompt"`
		}
		if json.Unmarshal(body, &goView) == nil {
			for k, v := range map[string]*json.RawMessage{"previous_response_id": goView.PreviousResponseID, "conversation": goView.Conversation, "prompt": goView.Prompt} {
				if v != nil && !found[k] {
					t.Fatalf("encoding/json reads %s as %s in %q; readRequest does not", k, *v, body)
				}
			}
		}
		var exact map[string]json.RawMessage // the last of each key spelled exactly
		if json.Unmarshal(body, &exact) == nil {
			for k := range found {
				if v, ok := exact[k]; ok && string(v) != "null" && !found[k] {
					t.Fatalf("a decoder taking the last %s reads %s in %q; readRequest does not", k, v, body)
				}
			}
		}
	})
}

// An input item referencing a stored item ({"type": "item_reference"},
// the type optional) is stored context too, billed as input: refused as
// the fields are, naming "input".
func TestStoredItemReferencesAreRefusedWhereABudgetApplies(t *testing.T) {
	var bills bill
	var sent atomic.Int32
	up := storedContextUpstream(t, &bills, &sent)
	r := startBudgetedTenant(t, up.URL)
	for _, body := range []string{
		`{"model":"deepseek-v3.2","input":[{"type":"item_reference","id":"msg_1"},{"role":"user","content":"and then?"}]}`,
		`{"model":"deepseek-v3.2","input":[{"id":"msg_1"}]}`,
		`{"model":"deepseek-v3.2","input":[{"TYPE":"item_reference","id":"msg_1"}]}`,
		`{"model":"deepseek-v3.2","INPUT":[{"id":"msg_1","type":null}]}`,
	} {
		resp, out := r.post(t, "/v1/responses", body, "Authorization", "Bearer vk-chat")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", body, out)
		_, code, msg := errorOf(t, out)
		assert.Equal(t, "stored_context_not_metered", code, body)
		assert.Equal(t, `"input"`, jsonString(t, out, "error", "param"), body)
		assert.NotContains(t, msg, "BudgetConfig", body)
	}
	assert.Zero(t, sent.Load(), "nothing refused reached the upstream")
	resp, out := r.post(t, "/v1/responses", `{"model":"deepseek-v3.2","input":[{"role":"user","content":"hi"},{"type":"message","role":"assistant","id":"msg_1","content":[]}]}`,
		"Authorization", "Bearer vk-chat")
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(out))
}
