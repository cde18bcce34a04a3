package httpguardtest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const messagesBody = `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`

// assertNoOpenAIRateLimitHeaders checks that h says nothing in OpenAI's
// terms, which an Anthropic client does not read.
func assertNoOpenAIRateLimitHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k := range h {
		assert.NotContains(t, []string{"Retry-After-Ms", "X-Ratelimit-Limit-Requests",
			"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"}, k)
	}
}

// Was a bug: the server's rate limit answered /v1/messages with OpenAI's
// x-ratelimit-* headers, retry-after-ms and an OpenAI error type
// ("requests"), none of which Anthropic sends: a test of an Anthropic
// client's handling of Anthropic's rate limit tested nothing of it.
func TestRateLimitOnMessagesAnswersAsAnthropic(t *testing.T) {
	t0 := time.Unix(1e9, 0) // 2001-09-09T01:46:40Z
	clock := &fakeClock{t: t0}
	s, err := newServer(Config{RequestsPerSecond: 50, Burst: 1}, clock.now)
	require.NoError(t, err)
	defer s.Close()

	code, ok, _ := do(t, s, "/v1/messages", messagesBody)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "1", ok.Get("Anthropic-Ratelimit-Requests-Limit"))
	assert.Equal(t, "0", ok.Get("Anthropic-Ratelimit-Requests-Remaining"))
	assert.Equal(t, "2001-09-09T01:46:40.020Z", ok.Get("Anthropic-Ratelimit-Requests-Reset"), "full again in 20ms, RFC 3339")
	assertNoOpenAIRateLimitHeaders(t, ok)

	clock.advance(5 * time.Millisecond)
	code, refused, body := do(t, s, "/v1/messages", messagesBody)
	require.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "1", refused.Get("Retry-After"), "whole seconds, rounded up")
	assert.Equal(t, "1", refused.Get("Anthropic-Ratelimit-Requests-Limit"))
	assert.Equal(t, "0", refused.Get("Anthropic-Ratelimit-Requests-Remaining"))
	assert.Equal(t, "2001-09-09T01:46:40.020Z", refused.Get("Anthropic-Ratelimit-Requests-Reset"), "a request again in 15ms")
	assertNoOpenAIRateLimitHeaders(t, refused)
	assert.JSONEq(t, `{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached for requests. Please try again in 15ms."}}`, string(body))

	// The chat endpoint keeps OpenAI's terms.
	clock.advance(time.Second)
	code, ok, _ = do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "0", ok.Get("X-Ratelimit-Remaining-Requests"))
	assert.Empty(t, ok.Get("Anthropic-Ratelimit-Requests-Remaining"))
}

func TestRateLimitHeadersModesOnMessages(t *testing.T) {
	for _, h := range []RateLimitHeaders{NoRateLimitHeaders, CoarseRetryAfter} {
		clock := &fakeClock{t: time.Unix(1e9, 0)}
		s, err := newServer(Config{RequestsPerSecond: 50, Burst: 1, RateLimitHeaders: h}, clock.now)
		require.NoError(t, err)
		_, ok, _ := do(t, s, "/v1/messages", messagesBody)
		code, refused, _ := do(t, s, "/v1/messages", messagesBody)
		s.Close()
		require.Equal(t, http.StatusTooManyRequests, code)
		assertNoOpenAIRateLimitHeaders(t, ok)
		assertNoOpenAIRateLimitHeaders(t, refused)
		if h == NoRateLimitHeaders {
			assert.Empty(t, refused.Get("Retry-After"))
			assert.Empty(t, refused.Get("Anthropic-Ratelimit-Requests-Reset"))
			assert.Empty(t, ok.Get("Anthropic-Ratelimit-Requests-Remaining"))
			continue
		}
		assert.Equal(t, "1", refused.Get("Retry-After"))
		assert.Equal(t, "2001-09-09T01:46:40.020Z", refused.Get("Anthropic-Ratelimit-Requests-Reset"))
	}
}

// Was a bug: RateLimited, QuotaExceeded and ServiceUnavailable, and an
// error left without a Type, answered /v1/messages with OpenAI's types
// (requests, insufficient_quota, server_error) and headers.
func TestScriptedFaultsOnMessagesAnswerAsAnthropic(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	s, err := newServer(Config{}, func() time.Time { return t0 })
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Enqueue(RateLimited(1500*time.Millisecond), QuotaExceeded(), ServiceUnavailable(),
		Fault{Status: 500}, Fault{Status: 404}, Fault{Status: 429, Type: "my_type", Code: "my_code"}))

	code, h, body := do(t, s, "/v1/messages", messagesBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "2", h.Get("Retry-After"))
	assert.Equal(t, "0", h.Get("Anthropic-Ratelimit-Requests-Remaining"))
	assert.Equal(t, "2001-09-09T01:46:41.500Z", h.Get("Anthropic-Ratelimit-Requests-Reset"))
	assertNoOpenAIRateLimitHeaders(t, h)
	assert.JSONEq(t, `{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached for requests. Please try again in 1.5s."}}`, string(body))

	code, h, body = do(t, s, "/v1/messages", messagesBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Empty(t, h.Get("Retry-After"))
	assert.JSONEq(t, `{"type":"error","error":{"type":"rate_limit_error","message":"You exceeded your current quota, please check your plan and billing details.","details":{"error_code":"enforced_spend_limit_reached"}}}`, string(body))

	for _, want := range []struct {
		code int
		typ  string
	}{{503, "api_error"}, {500, "api_error"}, {404, "not_found_error"}} {
		code, _, body = do(t, s, "/v1/messages", messagesBody)
		assert.Equal(t, want.code, code)
		assert.JSONEq(t, `"`+want.typ+`"`, string(jsonField(t, body, "error", "type")), "%d", want.code)
	}

	code, _, body = do(t, s, "/v1/messages", messagesBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.JSONEq(t, `{"type":"error","error":{"type":"my_type","message":"Too Many Requests","details":{"error_code":"my_code"}}}`, string(body), "a Type given is sent as given")
}

// jsonField returns the raw JSON at path in body.
func jsonField(t *testing.T, body []byte, path ...string) json.RawMessage {
	t.Helper()
	raw := json.RawMessage(body)
	for _, k := range path {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &m), "%s", body)
		raw = m[k]
	}
	return raw
}
