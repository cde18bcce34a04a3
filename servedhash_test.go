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

// An answer served by a dearer listed model is charged at that model's
// prices whatever its name looks like next to the request's: names whose
// lengths differ, their first bytes differing by the lengths' xor and a
// byte repeated, must not hash alike (a model hash that xored the length
// into the first word took "o3-mini" for "`3-mmini", and charged the dear
// model's answer at the cheap model's prices).
func TestBudgetChargesAServedModelWhoseNameIsAnEditOfTheRequests(t *testing.T) {
	for _, pair := range [][2]string{{"o3-mini", "`3-mmini"}, {"gemma2", "femmma2"}, {"gpt-4.1", "hpt--4.1"},
		{"claude-sonnet-4", "|laude-ssonnet-4"}, {"gpt-4o-mini-tts", "xpt-4o-mmini-tts"}} {
		asked, served := pair[0], pair[1]
		t.Run(asked, func(t *testing.T) {
			prices := PriceTable{asked: ExamplePrices()["gpt-4o-mini"], served: opus46}
			var billed atomic.Int64
			api := newFakeAPI(t, serveWith(&billed, prices, served, answerFormats[0].write))
			body := fmt.Sprintf(`{"model":%q,"max_tokens":1000,"messages":[{"role":"user","content":%q}]}`, asked, strings.Repeat("word ", 2000))
			settled := settleOne(t, api, prices, "/v1/chat/completions", body)
			assert.Equal(t, served, settled.PricedAs)
			assert.Equal(t, Money(billed.Load()), settled.Charged, "what the provider billed")
		})
	}
}

// A name and its edits that keep its words (a byte repeated, the first
// byte xored by the lengths' xor; a short name written twice, read as the
// same word) hash apart.
func TestHashModelTellsLengthsApart(t *testing.T) {
	base := strings.Repeat("gpt-4o-mini-tts/claude-sonnet-4-5", 2)
	for n := range 41 {
		name := base[:n]
		h := hashModel(name)
		if n > 0 && n < 8 {
			assert.NotEqual(t, h, hashModel(name+name[:min(n, 8-n)]), "%q written over", name)
		}
		for i := range n {
			edit := []byte(name[:i+1] + name[i:])
			edit[0] ^= byte(n ^ (n + 1))
			assert.NotEqual(t, h, hashModel(edit), "%q and %q", name, edit)
		}
	}
}

// The Budget's attempt keeps the hash of the model its request names,
// which settling compares with the model its answer names (see
// servedAsNamed): hashModel of that model, whether the price cache kept
// its price or looked it up again (models whose slot another holds),
// priced at its own entry or the fallback's, or named by the path alone.
func TestBudgetAttemptKeepsTheHashOfTheModelItsRequestNames(t *testing.T) {
	prices := PriceTable{"a": {Input: Dollar, Output: Dollar}, "ab": {Input: Dollar, Output: Dollar},
		"i": {Input: Dollar, Output: Dollar}, FallbackModel: {Input: Dollar, Output: Dollar}}
	b := newTestBudget(t, BudgetConfig{Limit: MaxBudgetLimit, Prices: prices})
	checked := 0
	rt := b.Wrap(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		a, ok := r.Context().(*budgetAttempt)
		require.True(t, ok, "the request sent down runs in its attempt's context")
		assert.Equal(t, hashModel(a.parsed.chat.Model), a.named, "%q", a.parsed.chat.Model)
		checked++
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	}))
	send := func(path, body string) {
		req, err := http.NewRequest(http.MethodPost, "http://api.test"+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	// "a", "i" and "q" share a slot of the price cache, which keeps the first.
	for range 2 {
		for _, model := range []string{"a", "i", "q", "ab", "unlisted", "gpt-4o-mini-2024-07-18"} {
			send("/v1/chat/completions", chatBody(model, 10))
		}
		send("/openai/deployments/dep-1/chat/completions", `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	}
	assert.Equal(t, 14, checked)
}

// Two listed names that hash alike are both priced, the dearer side (see
// modelHash), also when one of them is the model the request names: an
// answer naming the other, dearer one is charged at its prices, not taken
// for an answer of the named model. The names are fine-tunes' of one
// pattern that a 32-bit hash happens to meet.
func TestBudgetChargesTheDearerOfTwoNamesThatHashAsTheRequestsModel(t *testing.T) {
	asked, served := "gpt-4o-mini-ft-95474", "gpt-4o-mini-ft-154005"
	require.Equal(t, hashModel(asked), hashModel(served), "the names hash alike")
	body := fmt.Sprintf(`{"model":%q,"max_tokens":1000,"messages":[{"role":"user","content":%q}]}`, asked, strings.Repeat("word ", 2000))
	// The model asked for priced by the fallback entry: its name is the
	// table's by hash alone.
	unlisted := PriceTable{FallbackModel: ExamplePrices()["gpt-4o-mini"], served: opus46}
	var billed atomic.Int64
	api := newFakeAPI(t, serveWith(&billed, unlisted, served, answerFormats[0].write))
	settled := settleOne(t, api, unlisted, "/v1/chat/completions", body)
	assert.Equal(t, Money(billed.Load()), settled.Charged, "what the provider billed")
	assert.Equal(t, served, settled.PricedAs)

	prices := PriceTable{asked: ExamplePrices()["gpt-4o-mini"], served: opus46}
	billed.Store(0)
	api = newFakeAPI(t, serveWith(&billed, prices, served, answerFormats[0].write))
	settled = settleOne(t, api, prices, "/v1/chat/completions", body)
	assert.Equal(t, Money(billed.Load()), settled.Charged, "what the provider billed")
	assert.Equal(t, served, settled.PricedAs)

	// The promise: the provider bills past the Limit by one answer at
	// most, the one that cost more than its reservation.
	one := Money(billed.Swap(0))
	b := newTestBudget(t, BudgetConfig{Limit: 50 * Cent, Prices: prices})
	var reqs []*http.Request
	for range 40 {
		reqs = append(reqs, answerRequest(t, api.srv.URL, "/v1/chat/completions", false, asked))
	}
	sendRequestsUntilTheLimit(t, api, b, reqs, &billed, one)
}
