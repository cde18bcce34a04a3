package httpguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// promptText is 60,000 bytes of prompt: 15,000 tokens by the Limiter's
// estimate.
var promptText = strings.Repeat("word ", 12000)

// tokenLimitedAPI is a loopback server behind a Limiter of 20,000 tokens a
// minute that bills each request it runs 19,000 tokens and answers
// without usage (as a stream without it), so that each estimate stands.
type tokenLimitedAPI struct {
	srv    string
	client *http.Client
	billed atomic.Int64 // the tokens the provider ran
	hits   *arrivals
}

func newTokenLimitedAPI(t *testing.T) *tokenLimitedAPI {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{TokensPerMinute: 20000, MaxWait: -1}, clk)
	api := &tokenLimitedAPI{}
	srv, client, hits := newLimitedServer(t, l, clk, func(_ int64, w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		api.billed.Add(19000)
		io.WriteString(w, `{"id":"x"}`)
	})
	api.srv, api.client, api.hits = srv.URL, client, hits
	return api
}

// send posts body to path, with a GetBody unless getBody is false (the
// Limiter then reads the Body itself).
func (api *tokenLimitedAPI) send(t *testing.T, path, body string, getBody bool) (int, error) {
	var r io.Reader = strings.NewReader(body)
	if !getBody {
		r = struct{ io.Reader }{r}
	}
	return sendStatus(t, context.Background(), api.client, http.MethodPost, api.srv+path, r)
}

// A body that servers read differently (a field spelled in another case,
// a null after a value, a count written as a string) is refused by the
// Limiter, as by the Budget: read as no chat request, it took no tokens
// and its turn in a key of no model, and five prompts of 19,000 tokens
// each went at once under a limit of 20,000 a minute. A provider that
// reads the body (a Python server ignores "Stream", a Go relay takes
// "MAX_TOKENS") runs the whole prompt.
func TestLimiterRefusesBodiesServersReadDifferently(t *testing.T) {
	body := func(extra string) string {
		return `{"model":"m","max_tokens":4000,"messages":[{"role":"user","content":"` + promptText + `"}]` + extra + `}`
	}
	for _, getBody := range []bool{true, false} {
		api := newTokenLimitedAPI(t)
		code, err := api.send(t, "/v1/chat/completions", body(""), getBody)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		for _, extra := range []string{`,"Stream":false`, `,"MAX_TOKENS":4000`, `,"stream":true,"stream":null`, `,"n":"1"`} {
			_, err := api.send(t, "/v1/chat/completions", body(extra), getBody)
			require.Error(t, err, "%s (GetBody %v)", extra, getBody)
			assert.ErrorContains(t, err, "servers would read this body differently")
			assert.True(t, IsRefusal(err), "%v", err)
		}
		assert.Equal(t, int64(1), api.hits.n.Load(), "GetBody %v", getBody)
		assert.LessOrEqual(t, api.billed.Load(), int64(20000), "the provider ran more tokens in the minute than the limit (GetBody %v)", getBody)
	}
}

// The prompt an OpenAI Responses request holds in instructions (its system
// prompt), or a chat request in functions, is billed as input as much as
// its messages or input, and the Limiter counts it so: counted as one
// token, a 60,000-byte instructions let four requests of 19,000 tokens go
// in a minute under a limit of 20,000 tokens, when no answer said its
// usage.
func TestLimiterCountsInstructionsAndFunctionsAsPrompt(t *testing.T) {
	for path, body := range map[string]string{
		"/v1/responses":        `{"model":"m","instructions":"` + promptText + `","input":"hi","max_output_tokens":4000}`,
		"/v1/chat/completions": `{"model":"m","functions":[{"name":"f","description":"` + promptText + `"}],"messages":[{"role":"user","content":"hi"}],"max_tokens":4000}`,
	} {
		api := newTokenLimitedAPI(t)
		sent := 0
		for range 4 {
			code, err := api.send(t, path, body, true)
			if err != nil {
				require.ErrorIs(t, err, ErrRateLimited, path)
				continue
			}
			require.Equal(t, http.StatusOK, code, path)
			sent++
		}
		assert.Equal(t, 1, sent, path)
		assert.LessOrEqual(t, api.billed.Load(), int64(20000), "%s: the provider ran more tokens in the minute than the limit", path)
	}
}
