package httpguardtest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Billable* counters are the oracle of the money tests ("what a
// provider may bill <= what the Budget charged <= Limit"). A review found
// requests a real provider bills in full that the server counted short, so
// a Budget that under-reserved them would have passed; these tests failed
// before the fixes.

// Was a bug: the server ignored "n". OpenAI answers n choices to a chat request
// and bills completion_tokens for all of them; the server answers one
// choice and bills one completion. A Budget that forgot to multiply its
// output reservation by n would still pass every money test.
func TestBillsEveryChoiceOfN(t *testing.T) {
	s := start(t, Config{})
	const body = `{"model":"deepseek-v3.2","n":3,"max_tokens":8,"messages":[{"role":"user","content":"0123456789012345678901234567890123456789"}]}`
	status, _, b := do(t, s, "/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, status)

	var answer struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   struct {
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(b, &answer))
	st := s.Stats()
	assert.Equal(t, 3, len(answer.Choices), "a provider answers n choices")
	assert.EqualValues(t, 3*8, answer.Usage.CompletionTokens, "and reports the tokens of all of them")
	assert.EqualValues(t, 3*8, st.BillableCompletionTokens, "and bills the tokens of all of them")
	// Was a bug too (found by a later review): Stats.CompletionTokens, the
	// usage of answers sent to their end, added one choice's.
	assert.Equal(t, answer.Usage.CompletionTokens, st.CompletionTokens, "the answer's usage, sent to its end")
}

// Was a bug: the server read at most maxRequestBody (1 MiB) of a request body and
// answers the truncated JSON with a 400 that it does not bill. The client
// sent the whole prompt, which the Budget accepts (DefaultMaxBufferedBody is
// 4 MiB) and a provider with a long context bills: the oracle counts zero.
func TestBillsAPromptLargerThanOneMiB(t *testing.T) {
	s := start(t, Config{})
	text := strings.Repeat("a", maxRequestBody+4096) // just over 1 MiB of text
	body := `{"model":"deepseek-v3.2","max_tokens":8,"messages":[{"role":"user","content":"` + text + `"}]}`
	resp, err := post(t, s, "/v1/chat/completions", body)
	if err == nil {
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "the whole request reached the server")
	}
	assert.EqualValues(t, len(text)/4, s.Stats().BillablePromptTokens, "the prompt the client sent in full is billable")
}
