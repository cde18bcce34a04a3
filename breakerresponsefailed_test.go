package httpguard

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// responsesFailedWith is a Responses stream's response.failed event whose
// response object holds error, between members before and after it.
func responsesFailedWith(error string) string {
	return "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\"," +
		"\"status\":\"failed\"," + error + ",\"output\":[],\"usage\":null}}\n\n"
}

// A Responses stream that ends with response.failed is whole: it reaches
// the reader as it came. What it says of the provider is its error's, read
// as a chat stream's error is (see errorFault). server_error is the
// provider failing mid-generation, what a degraded provider looks like on
// the Responses API: a failure, and so is a code that would be a failure
// as a status (500, "503"; a relay passes on its upstream's) or a type that
// names the server's failure (api_error, as a relay that turns a cut
// upstream into response.failed sends it). Such codes and types counted
// neither way, read by a rule of their own that knew server_error alone.
// rate_limit_exceeded is the Limiter's signal, as a 429 is; the other codes
// (invalid_prompt, the image codes, vector_store_timeout, which OpenAI
// documents without blaming the provider) are the caller's errors, as a
// 4xx is, and so is a code that cannot be read: neither counts either way.
func TestBreakerCountsAResponseFailedByItsError(t *testing.T) {
	longCode := `"error":{"code":"server_error` + strings.Repeat(" ", maxUsageValue) + `"}`
	for name, tc := range map[string]struct {
		event   string
		failure bool // else it counts neither way
	}{
		"server_error":                  {responsesFailedWith(`"error":{"code":"server_error","message":"The server had an error while processing your request."}`), true},
		"server_error, escaped":         {responsesFailedWith(`"error":{"message":"x","code":"server\u005ferror"}`), true},
		"server_error, message escaped": {responsesFailedWith(`"error":{"message":"a \"quoted\" \\ message","code":"server_error"}`), true},
		"server_error, error last": {"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"output\":[{\"type\":\"message\",\"content\":[]}]," +
			"\"usage\":{\"input_tokens\":5,\"output_tokens\":1},\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n", true},
		"server_error, type last":           {"event: response.failed\ndata: {\"response\":{\"id\":\"resp_1\",\"error\":{\"code\":\"server_error\",\"message\":\"x\"}},\"type\":\"response.failed\"}\n\n", true},
		"server_error, long line":           {responsesFailedWith(`"instructions":"` + strings.Repeat("y", 3*maxTemplateLine) + `","error":{"code":"server_error","message":"x"}`), true},
		"server_error, long message":        {responsesFailedWith(`"error":{"code":"server_error","message":"` + strings.Repeat("m", 2048) + `"}`), true},
		"server_error, last of two codes":   {responsesFailedWith(`"error":{"code":"invalid_prompt","code":"server_error"}`), true},
		"rate_limit_exceeded":               {responsesFailedWith(`"error":{"code":"rate_limit_exceeded","message":"Rate limit reached"}`), false},
		"invalid_prompt":                    {responsesFailedWith(`"error":{"code":"invalid_prompt","message":"Invalid prompt"}`), false},
		"invalid_image":                     {responsesFailedWith(`"error":{"code":"invalid_image","message":"x"}`), false},
		"image_too_large":                   {responsesFailedWith(`"error":{"code":"image_too_large","message":"x"}`), false},
		"vector_store_timeout":              {responsesFailedWith(`"error":{"code":"vector_store_timeout","message":"x"}`), false},
		"an unknown code":                   {responsesFailedWith(`"error":{"code":"server_errors","message":"x"}`), false},
		"code 500":                          {responsesFailedWith(`"error":{"code":500,"message":"x"}`), true},
		"code \"500\"":                      {responsesFailedWith(`"error":{"code":"500","message":"x"}`), true},
		"code 503":                          {responsesFailedWith(`"error":{"message":"x","code":503}`), true},
		"code 529":                          {responsesFailedWith(`"error":{"message":"x","code":529}`), true},
		"type api_error":                    {responsesFailedWith(`"error":{"message":"upstream cut","type":"api_error"}`), true},
		"code 501":                          {responsesFailedWith(`"error":{"code":501,"message":"x"}`), false},
		"code 429":                          {responsesFailedWith(`"error":{"code":429,"message":"x"}`), false},
		"server_error for a rate limit":     {responsesFailedWith(`"error":{"type":"server_error","code":"rate_limit_exceeded"}`), false},
		"insufficient_quota":                {responsesFailedWith(`"error":{"code":"insufficient_quota","message":"x"}`), false},
		"a code in another case":            {responsesFailedWith(`"error":{"code":"Server_Error","message":"x"}`), false},
		"no code":                           {responsesFailedWith(`"error":{"message":"x"}`), false},
		"error null":                        {responsesFailedWith(`"error":null`), false},
		"no error":                          {responsesFailedWith(`"metadata":{}`), false},
		"a code too long to capture":        {responsesFailedWith(longCode), false},
		"server_error, then invalid_prompt": {responsesFailedWith(`"error":{"code":"server_error"},"error":{"code":"invalid_prompt"}`), false},
	} {
		t.Run(name, func(t *testing.T) {
			assertEndedStreamCounts(t, "/v1/responses", append(append([]string{}, responsesStreamStart...), tc.event), tc.failure)
		})
	}
}

// assertEndedStreamCounts sends a request to path through a Breaker that
// opens on one failure, from a server that streams events, which end with
// a terminal event, and checks that the caller reads them whole and that
// the Breaker counts the stream a failure, or neither way.
func assertEndedStreamCounts(t *testing.T, path string, events []string, failure bool) {
	t.Helper()
	srv := sseServer(t, events...)
	r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

	got, err := readStream(t, clientFor(t, r.b), srv.URL, path)

	require.NoError(t, err, "the stream ended with its terminal event")
	assert.Equal(t, strings.Join(events, ""), got)
	s := r.stats(t)
	if failure {
		assert.Equal(t, CircuitOpen, s.State, "the provider failed")
		return
	}
	assert.Equal(t, CircuitClosed, s.State)
	assert.Zero(t, s.Calls, "counts neither way")
	assert.Zero(t, s.ConsecutiveFailures)
}

// The caller closing a stream at its response.failed, or the connection
// breaking after it, counts as reading it to its end does.
func TestBreakerCountsAResponseFailedClosedOrCutAfterIt(t *testing.T) {
	failed := responsesFailedWith(`"error":{"code":"server_error","message":"x"}`)
	events := append(append([]string{}, responsesStreamStart...), failed)
	t.Run("closed", func(t *testing.T) {
		srv := sseServer(t, events...)
		r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})
		c := clientFor(t, r.b)
		resp, err := c.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(chatBody("m", 16)))
		require.NoError(t, err)
		want := strings.Join(events, "")
		got := make([]byte, len(want))
		_, err = io.ReadFull(resp.Body, got)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, CircuitOpen, r.stats(t).State)
	})
	t.Run("cut after it", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, e := range events {
				io.WriteString(w, e)
				w.(http.Flusher).Flush()
			}
			panic(http.ErrAbortHandler)
		})
		r := newBreakerRig(t, BreakerConfig{ConsecutiveFailures: 1})

		_, err := readStream(t, clientFor(t, r.b), srv.URL, "/v1/responses")

		require.Error(t, err)
		assert.Equal(t, CircuitOpen, r.stats(t).State)
	})
}

// The scanner reads a response.failed's error code however the stream is
// split into writes, and only from the event that ended the stream.
func TestSSEScannerReadsWhoseFaultAResponseFailedWas(t *testing.T) {
	start := strings.Join(responsesStreamStart, "")
	for name, tc := range map[string]struct {
		stream string
		want   responseFault
	}{
		"completed":    {start + responsesCompleted, faultNone},
		"server_error": {start + responsesFailedWith(`"error":{"code":"server\u005ferror","message":"x"}`), faultProvider},
		"server_error in an event that is not terminal": {start + "data: {\"type\":\"response.in_progress\",\"response\":{\"error\":{\"code\":\"server_error\"}}}\n\n" +
			responsesFailedWith(`"error":{"code":"invalid_prompt"}`), faultOther},
		"a response.failed after the end": {start + responsesFailedWith(`"error":{"code":"invalid_prompt"}`) +
			responsesFailedWith(`"error":{"code":"server_error"}`), faultOther},
		"rate_limit_exceeded": {start + responsesFailedWith(`"error":{"code":"rate_limit_exceeded"}`), faultOther},
		"code 500":            {start + responsesFailedWith(`"error":{"message":"a \"quoted\" message","code":500}`), faultProvider},
	} {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{1, 7, 64, len(tc.stream)} {
				for _, lexAll := range []bool{false, true} {
					fault, ended := faultInWrites(tc.stream, size, lexAll)
					require.True(t, ended)
					assert.Equal(t, tc.want, fault, "writes of %d bytes, lexAll %v", size, lexAll)
				}
			}
		})
	}
}

// faultInWrites is the fault a scanner finds in stream written size bytes
// at a time, and whether the stream ended.
func faultInWrites(stream string, size int, lexAll bool) (responseFault, bool) {
	s := &sseScanner{lexAll: lexAll}
	for p := []byte(stream); len(p) > 0; {
		n := min(size, len(p))
		s.write(p[:n])
		p = p[n:]
	}
	ended := streamEnded(s, true)
	return s.fault, ended
}
