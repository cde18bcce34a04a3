package httpguard

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a request that continues an Anthropic message thread (beta
// message-threads-2026-08-12, anthropic-sdk-go's BetaMessageThread) sends
// only its new messages, with "thread": {"type": "continue",
// "previous_message_id": …}; Anthropic holds the conversation, its system
// prompt and its tools, and bills them as input. The Budget reserved the
// new messages' bytes alone, as if the body held the prompt, so that a
// long thread passed the Limit. It is input the provider stored, as a
// previous_response_id is: refused unless StoredInputReserve bounds it.
func TestBudgetRefusesAMessageThreadItContinues(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	body := func(thread string) string {
		return `{"model":"m","max_tokens":100,` + thread + `"messages":[{"role":"user","content":"go on"}]}`
	}
	b := newTestBudget(t, BudgetConfig{Limit: Dollar})
	for _, thread := range []string{
		`"thread":{"type":"continue","previous_message_id":"msg_1"},`,
		`"thread":{"previous_message_id":"msg_1"},`, // the SDK's default type
		`"thread":{"type":"continue","previous_message_id":"msg_1"},"thread":{"type":"create"},`,
		`"thread":{"type":"create"},"thread":{"type":"continue","previous_message_id":"msg_1"},`,
		`"thread":{"type":"create","previous_message_id":"msg_1"},`,
		`"thread":{"typ\u0065":"create"},`,
		`"thread":"msg_1",`,
	} {
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/messages", "application/json", strings.NewReader(body(thread)))
		require.ErrorIs(t, err, ErrUnknownModel, thread)
		assert.ErrorContains(t, err, "message thread")
		assert.ErrorContains(t, err, "BudgetConfig.StoredInputReserve")
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")

	for _, plain := range []string{`"thread":{"type":"create"},`, `"thread":null,`} {
		readThrough(t, api, b, "/v1/messages", body(plain))
	}

	b = newTestBudget(t, BudgetConfig{Limit: Dollar, StoredInputReserve: 1000})
	readThrough(t, api, b, "/v1/messages", body(`"thread":{"type":"continue","previous_message_id":"msg_1"},`))
	assert.EqualValues(t, 3, api.hits.Load())
}

func TestParseChatRequestReadsAMessageThread(t *testing.T) {
	for thread, stored := range map[string]bool{
		`{"type":"create"}`:     false,
		`{ "type" : "create" }`: false,
		`null`:                  false,
		`{"type":"continue","previous_message_id":"msg_1"}`: true,
		`{}`:                true, // not a thread the request starts: the server's to read
		`{"type":"Create"}`: true,
		`[]`:                true,
	} {
		cr, err := parseChatRequest([]byte(`{"model":"m","thread":` + thread + `,"messages":[]}`))
		require.NoError(t, err, thread)
		assert.Equal(t, stored, cr.StoredInput, thread)
	}
}
