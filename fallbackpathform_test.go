package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the Budget summed Anthropic's server-side fallbacks (every
// model they try is billed) only on a path ending exactly with /messages,
// sent or decoded, and reserved the dearest model alone on any other. But
// servers serve other spellings of it as /v1/messages: Express and
// ASP.NET route in any case and with a trailing slash, gateways in front
// of the provider (nginx, Cloudflare) resolve dot segments, servers that
// decode the path read %2F as a slash, and Java's strip ;parameters. Such
// a request reserved a third of what it could be billed. The dearest
// model alone is now reserved only on a path that ends, sent and decoded,
// with /completions or /responses (a relay's fallbacks, OpenRouter's
// models, of which one model serves); every other path sums them.
func TestBudgetSumsFallbacksOnEveryPathAMessagesAPIMayServe(t *testing.T) {
	fable, opus := fallbackPrices["claude-fable-5"], fallbackPrices["claude-opus-4-8"]
	body := fallbackBody(`"fallbacks":[{"model":"claude-opus-4-8"},{"model":"claude-fable-5"}],`)
	every, dearest := 2*hopCost(body, fable, 64)+hopCost(body, opus, 64), hopCost(body, fable, 64)
	for _, path := range []string{"/v1/messages/", "/v1/messages//", "/v1/Messages", "/V1/MESSAGES", "/v1/messages/.",
		"/v1/messages/x/..", "/v1/messages;v=1", "/v1/messages%2F", "/v1/messages%2f", "/v1/messages%20", "/v1/messages%2e"} {
		assert.Equal(t, every, reservedFor(t, path, body), path)
	}
	for _, path := range []string{"/api/v1/chat/completions", "/v1/completions", "/api/v1/responses"} {
		assert.Equal(t, dearest, reservedFor(t, path, body), "a relay's: %s", path)
	}
	path := "/v1/messages%2F..%2Fchat%2Fcompletions" // a chat completion decoded, not as sent
	assert.Equal(t, every, reservedFor(t, path, body), "not plainly a relay's: %s", path)
}

// Was a bug: Anthropic's server-side fallbacks bill every model they try,
// and each may call the request's server tools, up to their max_uses; the
// Budget reserved every model's tokens but the tools' fees once, so that
// a request with two fallbacks and a web search of max_uses 5 reserved 5
// searches of the 15 it could be billed. Each model tried reserves them.
func TestBudgetReservesTheToolFeesOfEveryModelAFallbackTries(t *testing.T) {
	reserved := func(path, body string, fee Money) Money {
		var r Money
		b := newTestBudget(t, BudgetConfig{Limit: 10 * Dollar, Prices: fallbackPrices, ToolPrices: map[string]Money{"web_search": fee},
			OnSettle: func(s Settlement) { r = s.Reserved }})
		api := newFakeAPI(t, answerBound)
		resp, err := api.client(t, b).Post(api.srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return r
	}
	fees := func(path, body string) Money { return reserved(path, body, Cent) - reserved(path, body, 0) }
	const search = `"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}],`
	assert.Equal(t, 5*Cent, fees("/v1/messages", fallbackBody(search)), "one model: its 5 searches")
	body := fallbackBody(search + `"fallbacks":[{"model":"claude-opus-4-8"},{"model":"claude-fable-5"}],`)
	assert.Equal(t, 15*Cent, fees("/v1/messages", body), "three models tried: 5 searches each")
	assert.Equal(t, 5*Cent, fees("/api/v1/chat/completions", body), "a relay's fallbacks: one model serves")
}
