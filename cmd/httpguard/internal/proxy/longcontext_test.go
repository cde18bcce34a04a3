package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// longContextAnthropic is a loopback Anthropic Messages API billing as Anthropic
// does Claude Sonnet 4.5: a prompt past 200,000 tokens is refused (400),
// unless the request carries the beta header of the 1M-token context,
// "anthropic-beta: context-1m-2025-08-07"; then every token of the request
// is billed at the long-context prices ($6 input, $22.50 output per
// million, against $3 and $15). Its tokenizer reads four bytes of English
// a token. It returns what it billed so far.
func longContextAnthropic(t *testing.T) (*httptest.Server, func() httpguard.Money) {
	standard := httpguard.Price{Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar}
	long := httpguard.Price{Input: 6 * httpguard.Dollar, Output: 225 * httpguard.Dollar / 10}
	var mu sync.Mutex
	var billed httpguard.Money
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			MaxTokens int64 `json:"max_tokens"`
			Messages  []struct{ Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var input int64
		for _, m := range body.Messages {
			input += int64(len(m.Content)) / 4
		}
		price := standard
		if input > 200000 {
			if !strings.Contains(r.Header.Get("Anthropic-Beta"), "context-1m-2025-08-07") {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 220000 tokens > 200000 maximum"}}`)
				return
			}
			price = long
		}
		u := httpguard.Usage{InputTokens: input, OutputTokens: body.MaxTokens}
		mu.Lock()
		billed += price.Cost(u)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"ok"}],`+
			`"stop_reason":"max_tokens","usage":{"input_tokens":`+itoa(input)+`,"output_tokens":`+itoa(body.MaxTokens)+`}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() httpguard.Money { mu.Lock(); defer mu.Unlock(); return billed }
}

// A tenant whose budget prices claude-sonnet-4-5 without long_context
// ({input: 3, output: 15}) sends a 220,000-token
// prompt with "anthropic-beta: context-1m-2025-08-07", a header the proxy
// passes on: Anthropic bills the request at the long-context prices, twice
// the input price and 1.5 times the output price. Reserved and charged at
// the standard ones, a $10 Limit let $14.77 be billed. It is refused, as
// the other client-chosen tiers billed above standard prices that the
// prices lack are (request_not_priced), until the entry has long_context.
func TestProxyRefusesTheLongContextBetaWithoutItsPrice(t *testing.T) {
	up, billed := longContextAnthropic(t)
	prices := httpguard.PriceTable{"claude-sonnet-4-5": {Input: 3 * httpguard.Dollar, Output: 15 * httpguard.Dollar}}
	limit := 10 * httpguard.Dollar
	r := start(t, Config{Upstreams: []Upstream{{Prefix: "/v1/messages", URL: mustURL(t, up.URL+"/v1/messages"), API: Anthropic, KeyEnv: "ANTHROPIC_KEY"}},
		Getenv: realKeys, Prices: prices,
		Tenants: []Tenant{{Name: "chat", KeySHA256: keyHash("vk-chat"), Budget: &BudgetSpec{Limit: limit}}}})
	prompt := strings.Repeat("word ", 176000) // 880,000 bytes: 220,000 tokens
	body := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	resp, got := r.post(t, "/v1/messages", body, "X-Api-Key", "vk-chat", "Anthropic-Version", "2023-06-01",
		"Anthropic-Beta", "context-1m-2025-08-07")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%.300s", got)
	assert.Contains(t, string(got), "long_context")
	assert.Zero(t, billed(), "nothing reached Anthropic")
	assert.Zero(t, r.tenants[0].budget.Spent())
	assert.LessOrEqual(t, billed(), limit)
}
