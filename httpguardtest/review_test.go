package httpguardtest

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug (found by a review): with "n" above 1 the server answered and
// billed (Billable*) the completion tokens of every choice, but
// Stats.CompletionTokens, "the usage of successful answers sent to their
// end", added one choice's: it disagreed with the usage the answer itself
// reported, so a test comparing a client's charge with it failed for a
// right charge (or passed a charge that counted one choice).
func TestCompletionTokensCountEveryChoiceOfTheAnswer(t *testing.T) {
	s := start(t, Config{})
	const body = `{"model":"deepseek-v3.2","n":3,"max_tokens":8,"messages":[{"role":"user","content":"Say ok."}]}`
	status, _, b := do(t, s, "/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, status)
	var answer struct {
		Usage struct {
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(b, &answer))
	require.EqualValues(t, 3*8, answer.Usage.CompletionTokens)
	st := s.Stats()
	assert.Equal(t, answer.Usage.CompletionTokens, st.CompletionTokens, "the answer's usage, sent to its end")
	assert.Equal(t, st.BillableCompletionTokens, st.CompletionTokens, "an answer sent whole bills what it reports")
}

// Was a bug (found by a review): Anthropic's Messages API has no "n"; the
// server answers such a request with one message reporting one
// completion's output_tokens, but billed (Billable*) n completions, more
// than the answer it sent: a client charging the reported usage exactly
// looked like it undercharged.
func TestAnthropicAnswerBillsWhatItReports(t *testing.T) {
	s := start(t, Config{})
	const body = `{"model":"claude-sonnet-4-5","n":3,"max_tokens":8,"messages":[{"role":"user","content":"Say ok."}]}`
	status, _, b := do(t, s, "/v1/messages", body)
	require.Equal(t, http.StatusOK, status)
	var answer struct {
		Content []json.RawMessage `json:"content"`
		Usage   struct {
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(b, &answer))
	require.Len(t, answer.Content, 1, "one message")
	st := s.Stats()
	assert.Equal(t, answer.Usage.OutputTokens, st.BillableCompletionTokens, "billed what the answer reports")
	assert.Equal(t, st.BillableCompletionTokens, st.CompletionTokens)
}
