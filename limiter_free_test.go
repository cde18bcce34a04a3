package httpguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Counting tokens is limited by providers apart from the model's requests
// and tokens, and bills nothing: a counted prompt takes none of the
// model's tokens, and a 429 on counting pauses only the counting.
func TestLimiterFreeEndpointsTakeTurnsInAKeyOfTheirOwn(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000, MaxWait: -1}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"usage":{"input_tokens":8,"output_tokens":1}}`)
	})
	post := func(path, body string) (int, error) {
		return sendStatus(t, context.Background(), client, http.MethodPost, srv.URL+path, strings.NewReader(body))
	}
	long := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("word ", 30000) + `"}]}`
	code, err := post("/v1/messages/count_tokens", long)
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, code)

	code, err = post("/v1/messages", `{"model":"m","max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}`)
	require.NoError(t, err, "neither the counted prompt nor the counting's 429 holds the model's key")
	assert.Equal(t, http.StatusOK, code)

	_, err = post("/v1/messages/count_tokens", long)
	assert.ErrorIs(t, err, ErrRateLimited, "the counting's own pause")
	assert.ErrorContains(t, err, " m free")
}

// A moderation the Budget prices (Mistral's, billed by its input's tokens)
// is no free endpoint's request to the Limiter either: it takes its turn in
// its model's key, with its tokens, as the Budget judges it. OpenAI's
// moderations still take theirs in the free key, without tokens. The same
// holds with a Budget above the Limiter, whose reading of the request the
// Limiter then uses.
func TestLimiterBilledModerationsTakeTheModelsTokens(t *testing.T) {
	for _, budgeted := range []bool{false, true} {
		clk := newFakeClock(moveOn)
		l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000, MaxWait: -1}, clk)
		srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, `{"id":"mod-1","results":[]}`)
		})
		if budgeted {
			b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: PriceTable{"mistral-moderation-latest": mistralModeration}})
			client.Transport = b.Wrap(client.Transport)
		}
		post := func(model string) error {
			body := `{"model":"` + model + `","input":["` + strings.Repeat("word ", 12000) + `"]}`
			_, err := sendStatus(t, context.Background(), client, http.MethodPost, srv.URL+"/v1/moderations", strings.NewReader(body))
			return err
		}
		for range 3 {
			require.NoError(t, post("omni-moderation-latest"), "OpenAI's moderations take no tokens")
		}
		require.NoError(t, post("mistral-moderation-latest"))
		err := post("mistral-moderation-latest")
		require.ErrorIs(t, err, ErrRateLimited, "the second takes the tokens the first left")
		assert.ErrorContains(t, err, "tokens bucket")
		assert.NotContains(t, err.Error(), " free")
	}
}
