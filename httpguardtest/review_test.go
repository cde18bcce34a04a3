package httpguardtest

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

// Was a bug (found by a review): Stats.Requests "counts requests received,
// whatever their fate", but a request whose client went away while sending
// its body (an attempt timeout during a slow upload, a caller's
// cancellation) was neither counted nor recorded: a test counting the
// attempts a client made from Stats.Requests or Requests came up short.
// Such a request is not billed: the provider never had all of it.
func TestCountsARequestWhoseClientWentAwayMidBody(t *testing.T) {
	s := start(t, Config{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	require.NoError(t, err)
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "100 Continue", "the handler is reading the body")
	_, err = io.WriteString(conn, `{"model":"m","messages":[`)
	require.NoError(t, err)
	conn.Close()
	require.Eventually(t, func() bool { return s.Stats().Requests == 1 }, 5*time.Second, time.Millisecond)
	st := s.Stats()
	assert.Zero(t, st.BillablePromptTokens+st.BillableCompletionTokens, "a request the provider never had whole is not billed")
	reqs := s.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "/v1/chat/completions", reqs[0].Path)
}

// Was a bug (found by a review): Stats says only error statuses are left
// out of the Billable counters, and the library's rule is that a 2xx was
// produced and billed (the Retrier never retries one); but a scripted
// answer with a 2xx Status, such as a 200 marked x-should-retry: true, was
// not billed: a client that retried it, paying twice, looked free.
func TestBillsAScripted2xxAnswer(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(Fault{Status: 200, Header: http.Header{"X-Should-Retry": {"true"}},
		Body: `{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":16}}`}))
	status, _, _ := do(t, s, "/v1/chat/completions", `{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"Say ok."}]}`)
	require.Equal(t, http.StatusOK, status)
	st := s.Stats()
	assert.EqualValues(t, 2, st.BillablePromptTokens, "the 2xx answer is billed")
	assert.EqualValues(t, 16, st.BillableCompletionTokens)
}
