package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/holysheep/httpguard"
	openai "github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openai-go and anthropic-sdk-go take a raw body as an io.Reader
// (client.Post(ctx, path, body, &res), option.WithRequestBody). For a
// *bytes.Reader they set GetBody to rewind that same reader and return it,
// not a new copy: a layer that reads a GetBody copy to learn the model and
// then sends the request's Body sends an empty body, which net/http refuses
// ("ContentLength=N with Body length 0"). Every layer that reads the body
// must leave the request's own Body whole.

const rawChat = `{"model":"deepseek-v3.2","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`

// bodyReaders returns each layer that reads request bodies, alone and in
// the recommended stack.
func bodyReaders(t *testing.T) map[string][]httpguard.Layer {
	prices, err := httpguard.LoadPrices(strings.NewReader(
		`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42},` +
			`"claude-sonnet-4-5": {"input": 3, "cached_input": 0.3, "output": 15}}`))
	require.NoError(t, err)
	budget := func() *httpguard.Budget {
		b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollars(1), Prices: prices})
		require.NoError(t, err)
		return b
	}
	limiter := func() *httpguard.Limiter {
		l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 10, TokensPerMinute: 1_000_000})
		require.NoError(t, err)
		return l
	}
	return map[string][]httpguard.Layer{
		"Budget":  {budget()},
		"Limiter": {limiter()},
		"Breaker": {newBreaker(t)},
		"stack":   {newRetrier(t, fastPolicy()), newBreaker(t), budget(), limiter()},
	}
}

func TestOpenAIGoSendsABytesReaderBodyWhole(t *testing.T) {
	for name, layers := range bodyReaders(t) {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, always(http.StatusOK, chatCompletion))
			var out map[string]any

			err := newOpenAIGo(a, guardedClient(t, layers...), openaioption.WithMaxRetries(0)).
				Post(context.Background(), "chat/completions", bytes.NewReader([]byte(rawChat)), &out)

			require.NoError(t, err)
			require.Len(t, a.received(), 1)
			assert.Equal(t, rawChat, string(a.received()[0]))
		})
	}
}

func TestAnthropicSendsABytesReaderBodyWhole(t *testing.T) {
	body := strings.Replace(rawChat, "deepseek-v3.2", "claude-sonnet-4-5", 1)
	for name, layers := range bodyReaders(t) {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, always(http.StatusOK, anthropicMessage))
			var out map[string]any

			err := newAnthropic(a, guardedClient(t, layers...), option.WithMaxRetries(0), option.WithRequestTimeout(time.Minute)).
				Post(context.Background(), "v1/messages", bytes.NewReader([]byte(body)), &out)

			require.NoError(t, err)
			require.Len(t, a.received(), 1)
			assert.Equal(t, body, string(a.received()[0]))
		})
	}
}

// Over HTTP/2, net/http may still be writing a request's body when an
// early answer (a 503 sent before the body was read) comes back, and
// openai-go's own retry then rewinds that very *bytes.Reader: its bare
// retry sent the server a mangled body (1 of 3 requests, in every run
// measured, with -race reporting the reader shared). Under the Retrier,
// which rewinds only once the transport has closed the body it was
// writing and marks its answer X-Should-Retry: false, every attempt sends
// the body whole.
func TestOpenAIGoOverHTTP2SendsABytesReaderBodyWholeOnEveryAttempt(t *testing.T) {
	body := `{"model":"deepseek-v3.2","max_tokens":64,"messages":[{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}]}`
	var mu sync.Mutex
	var hits, whole int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		n := hits
		mu.Unlock()
		if n <= 2 { // before reading the body
			reply(w, http.StatusServiceUnavailable, openAIUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if string(b) == body {
			whole++
		}
		mu.Unlock()
		reply(w, http.StatusOK, chatCompletion)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport)
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: httpguard.Chain(tr, bodyReaders(t)["stack"]...)}
	client := openai.NewClient(openaioption.WithAPIKey("sk-test"), openaioption.WithBaseURL(srv.URL+"/v1/"), openaioption.WithHTTPClient(c))
	var out map[string]any

	err := client.Post(context.Background(), "chat/completions", bytes.NewReader([]byte(body)), &out)

	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 3, hits, "two 503s and the answer, all from the Retrier")
	assert.Equal(t, 1, whole, "the answered attempt had the body whole")
}
