package httpguardtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatBody is a request whose messages hold 40 bytes of text: 10 tokens.
const chatBody = `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"0123456789012345678901234567890123456789"}]}`

func start(t *testing.T, c Config) *Server {
	t.Helper()
	s, err := NewServer(c)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// fakeClock is a settable clock for the rate limit.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func post(t *testing.T, s *Server, path, body string) (*http.Response, error) {
	t.Helper()
	return s.Client().Post(s.URL+path, "application/json", strings.NewReader(body))
}

// do posts body and returns the answer's status, headers and body.
func do(t *testing.T, s *Server, path, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := post(t, s, path, body)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

type sseFrame struct{ event, data string }

// readFrames reads SSE frames until the body ends, and returns them with
// the read error (nil at a clean end). Comments are returned as frames
// with event ":".
func readFrames(r io.Reader) ([]sseFrame, error) {
	var frames []sseFrame
	var cur sseFrame
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != (sseFrame{}) {
				frames = append(frames, cur)
			}
			cur = sseFrame{}
		case strings.HasPrefix(line, ":"):
			cur.event = ":"
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return frames, sc.Err()
}

type openAIAnswer struct {
	Choices []struct {
		Message      struct{ Content string }
		Delta        struct{ Content string }
		FinishReason *string `json:"finish_reason"`
	}
	Usage *openAIUsage
}

func TestAnswersChatCompletionWithEstimatedUsage(t *testing.T) {
	s := start(t, Config{CachedTokens: 4})
	code, _, body := do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, code)
	var a openAIAnswer
	require.NoError(t, json.Unmarshal(body, &a))
	require.NotNil(t, a.Usage)
	assert.Equal(t, 10, a.Usage.PromptTokens)
	assert.Equal(t, 16, a.Usage.CompletionTokens)
	assert.Equal(t, 26, a.Usage.TotalTokens)
	assert.Equal(t, 4, a.Usage.PromptTokensDetails.CachedTokens)
	require.Len(t, a.Choices, 1)
	assert.Equal(t, "stop", *a.Choices[0].FinishReason)
}

func TestMaxTokensLowersCompletionTokens(t *testing.T) {
	s := start(t, Config{CompletionTokens: 50})
	_, _, body := do(t, s, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`)
	var a openAIAnswer
	require.NoError(t, json.Unmarshal(body, &a))
	require.NotNil(t, a.Usage)
	assert.Equal(t, 3, a.Usage.CompletionTokens)
	assert.Equal(t, 1, a.Usage.PromptTokens, "a prompt counts at least one token")
	assert.Equal(t, "length", *a.Choices[0].FinishReason)
	assert.Equal(t, "ok ok ok", a.Choices[0].Message.Content)
}

func TestStreamEndsWithUsageChunkWhenAsked(t *testing.T) {
	s := start(t, Config{CompletionTokens: 3})
	resp, err := post(t, s, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"12345678"}],"stream":true,"stream_options":{"include_usage":true}}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	frames, err := readFrames(resp.Body)
	require.NoError(t, err)
	require.Len(t, frames, 1+3+1+1+1) // role, tokens, finish, usage, [DONE]
	assert.Equal(t, "[DONE]", frames[len(frames)-1].data)
	var last openAIAnswer
	require.NoError(t, json.Unmarshal([]byte(frames[len(frames)-2].data), &last))
	assert.Empty(t, last.Choices)
	require.NotNil(t, last.Usage)
	assert.Equal(t, 2, last.Usage.PromptTokens)
	assert.Equal(t, 3, last.Usage.CompletionTokens)
	for _, f := range frames[:len(frames)-2] {
		assert.Contains(t, f.data, `"usage":null`)
	}
}

func TestStreamHasNoUsageUnlessAsked(t *testing.T) {
	s := start(t, Config{CompletionTokens: 3})
	resp, err := post(t, s, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	frames, err := readFrames(resp.Body)
	require.NoError(t, err)
	require.Len(t, frames, 1+3+1+1)
	assert.Equal(t, "[DONE]", frames[len(frames)-1].data)
	for _, f := range frames[:len(frames)-1] {
		assert.Contains(t, f.data, `"usage":null`)
	}
}

func TestKeepAliveCommentStartsStream(t *testing.T) {
	s := start(t, Config{KeepAlive: true})
	resp, err := post(t, s, "/v1/chat/completions", `{"stream":true}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	frames, err := readFrames(resp.Body)
	require.NoError(t, err)
	require.NotEmpty(t, frames)
	assert.Equal(t, ":", frames[0].event)
}

func TestAnthropicStreamHasNamedEventsAndCumulativeUsage(t *testing.T) {
	s := start(t, Config{CompletionTokens: 2, CachedTokens: 1})
	resp, err := post(t, s, "/v1/messages",
		`{"model":"claude-sonnet-4-5","max_tokens":100,"system":"abcd","messages":[{"role":"user","content":[{"type":"text","text":"efgh"}]}],"stream":true}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	frames, err := readFrames(resp.Body)
	require.NoError(t, err)
	var names []string
	for _, f := range frames {
		names = append(names, f.event)
	}
	assert.Equal(t, []string{"message_start", "content_block_start", "ping", "content_block_delta",
		"content_block_delta", "content_block_stop", "message_delta", "message_stop"}, names)
	var start struct {
		Message struct{ Usage anthropicUsage }
	}
	require.NoError(t, json.Unmarshal([]byte(frames[0].data), &start))
	assert.Equal(t, 1, start.Message.Usage.InputTokens, "input_tokens excludes cache reads")
	assert.Equal(t, 1, start.Message.Usage.CacheReadInputTokens)
	var delta struct{ Usage anthropicUsage }
	require.NoError(t, json.Unmarshal([]byte(frames[6].data), &delta))
	assert.Equal(t, 2, delta.Usage.OutputTokens)
	assert.NotContains(t, frames[len(frames)-1].data, "[DONE]")
}

func TestAnthropicMessageReportsUsage(t *testing.T) {
	s := start(t, Config{CompletionTokens: 5})
	code, _, body := do(t, s, "/v1/messages", `{"max_tokens":4,"messages":[{"role":"user","content":"abcdefgh"}]}`)
	require.Equal(t, http.StatusOK, code)
	var m struct {
		Type       string
		StopReason string `json:"stop_reason"`
		Usage      anthropicUsage
	}
	require.NoError(t, json.Unmarshal(body, &m))
	assert.Equal(t, "message", m.Type)
	assert.Equal(t, "max_tokens", m.StopReason)
	assert.Equal(t, anthropicUsage{InputTokens: 2, OutputTokens: 4}, m.Usage)
}

func TestConnectionResetGivesTransportError(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(ConnectionReset()))
	resp, err := post(t, s, "/v1/chat/completions", chatBody)
	if resp != nil {
		resp.Body.Close()
	}
	require.Error(t, err)
	assert.True(t, errors.Is(err, syscall.ECONNRESET), "want a TCP reset, got %v", err)
	assert.Equal(t, int64(1), s.Stats().Resets)
}

func TestRateLimitedFaultCarriesWaitHeaders(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(RateLimited(1500*time.Millisecond)))
	code, h, body := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "1500", h.Get("Retry-After-Ms"))
	assert.Equal(t, "2", h.Get("Retry-After"))
	assert.Equal(t, "0", h.Get("X-Ratelimit-Remaining-Requests"))
	assert.Equal(t, "1.5s", h.Get("X-Ratelimit-Reset-Requests"))
	assert.JSONEq(t, `{"error":{"message":"Rate limit reached for requests. Please try again in 1.5s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, string(body))
}

func TestQuotaExceededHasInsufficientQuotaBody(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(QuotaExceeded()))
	code, h, body := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Empty(t, h.Get("Retry-After"))
	var e struct{ Error struct{ Type, Code string } }
	require.NoError(t, json.Unmarshal(body, &e))
	assert.Equal(t, "insufficient_quota", e.Error.Type)
	assert.Equal(t, "insufficient_quota", e.Error.Code)
}

func TestErrorOnMessagesEndpointHasAnthropicShape(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(Overloaded()))
	code, _, body := do(t, s, "/v1/messages", `{"max_tokens":5,"messages":[]}`)
	assert.Equal(t, 529, code)
	assert.JSONEq(t, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, string(body))
}

func TestFaultBodyAndHeaderAreSentVerbatim(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(Fault{Status: 200, Header: http.Header{"X-Should-Retry": {"true"}}, Body: `{"error":{"message":"boom"}}`}))
	code, h, body := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "true", h.Get("X-Should-Retry"))
	assert.Equal(t, "application/json", h.Get("Content-Type"))
	assert.Equal(t, `{"error":{"message":"boom"}}`, string(body))
}

func TestSlowHeadersAnswerAfterDelay(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(SlowHeaders(time.Hour)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	require.NoError(t, err)
	resp, err := s.Client().Do(req)
	if resp != nil {
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestSlowHeadersWaitEndsWhenClientGivesUp(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(SlowHeaders(time.Hour)))
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := s.Client().Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Stats().Requests == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	// The handler has returned: the next request is answered at once.
	code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusOK, code)
}

func TestCloseEndsSlowHandlers(t *testing.T) {
	s, err := NewServer(Config{Latency: time.Hour})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := post(t, s, "/v1/chat/completions", chatBody)
		if resp != nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Stats().Requests == 1 }, 5*time.Second, time.Millisecond)
	s.Close() // returns only once the handler did
	assert.Error(t, <-errc)
	s.Close()
}

func TestCutStreamResetsAfterEvents(t *testing.T) {
	s := start(t, Config{CompletionTokens: 10})
	require.NoError(t, s.Enqueue(CutStream(3)))
	resp, err := post(t, s, "/v1/chat/completions", `{"stream":true,"stream_options":{"include_usage":true}}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	frames, err := readFrames(resp.Body)
	assert.Error(t, err)
	assert.Len(t, frames, 3)
	st := s.Stats()
	assert.Equal(t, int64(1), st.Resets)
	assert.Zero(t, st.CompletionTokens, "a cut stream is not billed")
}

func TestCutStreamBeyondItsLengthLosesTheLastEvent(t *testing.T) {
	s := start(t, Config{CompletionTokens: 1})
	require.NoError(t, s.Enqueue(CutStream(100)))
	resp, err := post(t, s, "/v1/chat/completions", `{"stream":true}`)
	require.NoError(t, err)
	defer resp.Body.Close()
	frames, err := readFrames(resp.Body)
	assert.Error(t, err)
	require.Len(t, frames, 3) // role, token, finish; no [DONE]
}

func TestCutJSONAnswerResetsMidBody(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(CutStream(1)))
	resp, err := post(t, s, "/v1/chat/completions", chatBody)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	assert.Error(t, err)
	assert.Less(t, int64(len(b)), resp.ContentLength)
}

func TestScriptAppliesFaultsInOrder(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.Enqueue(ServiceUnavailable(), QuotaExceeded()))
	assert.Equal(t, 2, s.Pending())
	var codes []int
	for range 3 {
		code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
		codes = append(codes, code)
	}
	assert.Equal(t, []int{503, 429, 200}, codes)
	assert.Zero(t, s.Pending())
}

func TestOutageFailsEveryRequestUntilEnded(t *testing.T) {
	s := start(t, Config{})
	require.NoError(t, s.StartOutage(ServiceUnavailable()))
	for range 3 {
		code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
		assert.Equal(t, http.StatusServiceUnavailable, code)
	}
	s.EndOutage()
	code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusOK, code)
}

func statuses(t *testing.T, seed uint64, n int) []int {
	s := start(t, Config{FaultRate: 0.3, Faults: []Fault{ServiceUnavailable(), Overloaded()}, Seed: seed})
	codes := make([]int, n)
	for i := range codes {
		codes[i], _, _ = do(t, s, "/v1/chat/completions", chatBody)
	}
	return codes
}

func TestFaultRateIsDeterministicForASeed(t *testing.T) {
	a, b := statuses(t, 7, 50), statuses(t, 7, 50)
	assert.Equal(t, a, b)
	assert.NotEqual(t, a, statuses(t, 8, 50))
	faults := 0
	for _, c := range a {
		if c != 200 {
			faults++
		}
	}
	assert.InDelta(t, 15, faults, 10)
}

func TestRateLimitRefusesRequestsBeyondTheBucket(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 10, Burst: 2}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	var codes []int
	for range 3 {
		code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
		codes = append(codes, code)
	}
	assert.Equal(t, []int{200, 200, 429}, codes)
	assert.Equal(t, int64(1), s.Stats().RateLimited)
}

func TestRateLimitedAnswerSaysWhenToComeBack(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 20, Burst: 1}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	do(t, s, "/v1/chat/completions", chatBody)
	clock.advance(20 * time.Millisecond)
	code, h, _ := do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "30", h.Get("Retry-After-Ms"))
	assert.Equal(t, "1", h.Get("Retry-After"))
	assert.Equal(t, "0", h.Get("X-Ratelimit-Remaining-Requests"))
	clock.advance(30 * time.Millisecond)
	code, _, _ = do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusOK, code)
}

func TestSuccessfulAnswersCarryRateLimitHeaders(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 20}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	code, h, _ := do(t, s, "/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "20", h.Get("X-Ratelimit-Limit-Requests"))
	assert.Equal(t, "19", h.Get("X-Ratelimit-Remaining-Requests"))
	assert.Equal(t, "50ms", h.Get("X-Ratelimit-Reset-Requests"))
}

func TestStatsCountAnswersAndBilledTokens(t *testing.T) {
	s := start(t, Config{CachedTokens: 2})
	require.NoError(t, s.Enqueue(ServiceUnavailable()))
	for range 3 {
		do(t, s, "/v1/chat/completions", chatBody)
	}
	st := s.Stats()
	assert.Equal(t, int64(3), st.Requests)
	assert.Equal(t, map[int]int64{200: 2, 503: 1}, st.Status)
	assert.Equal(t, int64(20), st.PromptTokens)
	assert.Equal(t, int64(4), st.CachedTokens)
	assert.Equal(t, int64(32), st.CompletionTokens)
}

func TestStatsAreExactUnderConcurrentRequests(t *testing.T) {
	s := start(t, Config{})
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post(t, s, "/v1/chat/completions", chatBody)
			if assert.NoError(t, err) {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	assert.Equal(t, int64(40), st.Requests)
	assert.Equal(t, int64(40), st.Status[200])
	assert.Equal(t, int64(40*16), st.CompletionTokens)
}

func TestRequestsKeepsTheLatest(t *testing.T) {
	s := start(t, Config{History: 2})
	for _, n := range []string{"0", "1", "2"} {
		req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		require.NoError(t, err)
		req.Header.Set("X-Stainless-Retry-Count", n)
		resp, err := s.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	reqs := s.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "/v1/chat/completions", reqs[0].Path)
	assert.Equal(t, chatBody, string(reqs[0].Body))
	assert.Equal(t, []string{"1", "2"}, s.RetryCounts())
}

func TestResetStatsZeroesCounters(t *testing.T) {
	s := start(t, Config{})
	do(t, s, "/v1/chat/completions", chatBody)
	s.ResetStats()
	assert.Equal(t, Stats{Status: map[int]int64{}}, s.Stats())
	assert.Empty(t, s.Requests())
}

func TestUnknownPathIsNotFound(t *testing.T) {
	s := start(t, Config{})
	code, _, _ := do(t, s, "/v1/embeddings", `{}`)
	assert.Equal(t, http.StatusNotFound, code)
}

func TestMalformedRequestIsBadRequest(t *testing.T) {
	s := start(t, Config{})
	code, _, body := do(t, s, "/v1/chat/completions", `{"messages":`)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, string(body), "invalid_request_error")
}

func TestNewServerRejectsInvalidConfig(t *testing.T) {
	for _, c := range []Config{
		{FaultRate: 1.5, Faults: []Fault{ServiceUnavailable()}},
		{FaultRate: 0.5},
		{Faults: []Fault{{Status: 42}}},
		{RequestsPerSecond: -1},
		{Burst: -1},
		{Latency: -time.Second},
	} {
		s, err := NewServer(c)
		assert.Error(t, err, "%+v", c)
		assert.Nil(t, s)
	}
}

func TestEnqueueRejectsInvalidFaultsWhole(t *testing.T) {
	s := start(t, Config{})
	err := s.Enqueue(ServiceUnavailable(), Fault{Status: 503, Reset: true})
	assert.ErrorContains(t, err, "at most one of Status, Reset and CutAfter")
	assert.Zero(t, s.Pending())
}

func TestCloseDoesNotWaitForAStalledRequestBody(t *testing.T) {
	s, err := NewServer(Config{})
	require.NoError(t, err)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+
		"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n")
	require.NoError(t, err)
	// The server asks for the body once the handler reads it.
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "100 Continue")
	_, err = io.WriteString(conn, `{"mess`)
	require.NoError(t, err)

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		conn.Close() // unblock Close so that the test ends
		<-closed
		assert.Fail(t, "Close waited for the stalled request")
	}
}

func TestOutageTakesNothingFromTheRateLimit(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 1, Burst: 1}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.StartOutage(ServiceUnavailable()))
	for range 2 {
		code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
		require.Equal(t, http.StatusServiceUnavailable, code)
	}
	s.EndOutage()
	code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusOK, code)
}

func TestRateLimitedRequestsLeaveTheScriptAlone(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s, err := newServer(Config{RequestsPerSecond: 1, Burst: 1}, clock.now)
	require.NoError(t, err)
	defer s.Close()
	do(t, s, "/v1/chat/completions", chatBody)
	require.NoError(t, s.Enqueue(ServiceUnavailable()))
	code, _, _ := do(t, s, "/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, 1, s.Pending())
}

func TestStatsCountRequestsToUnknownPaths(t *testing.T) {
	s := start(t, Config{})
	do(t, s, "/v1/embeddings", `{}`)
	st := s.Stats()
	assert.Equal(t, int64(1), st.Requests)
	assert.Equal(t, int64(1), st.Status[http.StatusNotFound])
	require.Len(t, s.Requests(), 1)
	assert.Equal(t, "/v1/embeddings", s.Requests()[0].Path)
}
