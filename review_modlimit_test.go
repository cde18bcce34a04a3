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

// A moderation the Budget prices (Mistral's, billed by its input's tokens)
// is no free endpoint's request to the Limiter either: it takes its turn in
// its model's key, with its tokens, as the Budget judges it. OpenAI's
// moderations still take theirs in the free key, without tokens.
func TestLimiterBilledModerationsTakeTheModelsTokens(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000, MaxWait: -1}, clk)
	srv, client, _ := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"id":"mod-1","results":[]}`)
	})
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
