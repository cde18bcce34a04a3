package httpguardtest

import (
	"encoding/json"
	"math"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: CompletionTokens had no upper bound. The answer is built in
// memory (a stream of 8 choices of 100,000 tokens allocated 494 MB), and
// CompletionTokens of math.MaxInt/2 with n 3 billed
// BillableCompletionTokens -4611686018427387907.
func TestNewServerRejectsCompletionTokensAboveTheMaximum(t *testing.T) {
	for _, n := range []int{maxAnswerTokens + 1, math.MaxInt / 2, math.MaxInt} {
		s, err := NewServer(Config{CompletionTokens: n})
		assert.ErrorContains(t, err, "CompletionTokens must be <= 131072", "%d", n)
		if s != nil {
			s.Close()
		}
	}
	s, err := NewServer(Config{CompletionTokens: maxAnswerTokens})
	require.NoError(t, err)
	s.Close()
}

// A request whose n choices would hold more completion tokens than an
// answer may gets a 400, as a provider refuses a max_tokens above the
// model's limit, and is not billed: 128 choices of CompletionTokens
// 131072 would be 16M tokens, 10 GB of stream built in memory.
func TestAnAnswerAboveTheMaximumIsRefused(t *testing.T) {
	s := start(t, Config{CompletionTokens: maxAnswerTokens})
	code, _, body := do(t, s, "/v1/chat/completions", `{"model":"m","n":128,"stream":true,"messages":[]}`)
	assert.Equal(t, http.StatusBadRequest, code)
	var e struct {
		Error struct{ Type, Message string }
	}
	require.NoError(t, json.Unmarshal(body, &e))
	assert.Equal(t, "invalid_request_error", e.Error.Type)
	assert.Contains(t, e.Error.Message, "128 × 131072 = 16777216 completion tokens, above the maximum of 131072")
	st := s.Stats()
	assert.Zero(t, st.BillableCompletionTokens)
	assert.Zero(t, st.BillablePromptTokens)

	// max_tokens brings the same n within the maximum: answered, to the token.
	code, _, body = do(t, s, "/v1/chat/completions", `{"model":"m","n":128,"max_tokens":1024,"messages":[]}`)
	require.Equal(t, http.StatusOK, code)
	var a openAIAnswer
	require.NoError(t, json.Unmarshal(body, &a))
	assert.Equal(t, maxAnswerTokens, a.Usage.CompletionTokens)
	assert.Equal(t, int64(maxAnswerTokens), s.Stats().BillableCompletionTokens)
}
