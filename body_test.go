package httpguard

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReplayableReadsABodyOfTheDeclaredOrAnUnknownLength(t *testing.T) {
	for _, cl := range []int64{-1, 0, 11} {
		req, err := http.NewRequest("POST", "http://api.test/", strings.NewReader("hello world"))
		require.NoError(t, err)
		req.ContentLength = cl
		_, got, err := replayable(req, 100)
		require.NoError(t, err, "ContentLength %d", cl)
		assert.Equal(t, "hello world", string(got), "ContentLength %d", cl)

		req.GetBody = nil // the body without GetBody, read from Body
		req.Body = io.NopCloser(strings.NewReader("hello world"))
		r, got, err := replayable(req, 100)
		require.NoError(t, err, "ContentLength %d", cl)
		assert.Equal(t, "hello world", string(got), "ContentLength %d", cl)
		assert.EqualValues(t, 11, r.ContentLength)
		sent, _ := io.ReadAll(r.Body)
		assert.Equal(t, "hello world", string(sent), "ContentLength %d", cl)
	}
}

// A body longer or shorter than its ContentLength is refused with the
// error net/http gives for it, never sent as if it were whole.
func TestABodyNotAsLongAsDeclaredIsRefusedAsNetHTTPRefusesIt(t *testing.T) {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for _, cl := range []int64{3, 12, 40} {
		newReq := func() *http.Request {
			req, err := http.NewRequest("POST", s.URL, strings.NewReader("hello world"))
			require.NoError(t, err)
			req.ContentLength = cl
			return req
		}
		// net/http's words for it; it may instead report the connection it
		// closed over it, as a race decides.
		want := fmt.Sprintf("http: ContentLength=%d with Body length 11", cl)
		_, netErr := tr.RoundTrip(newReq())
		require.Error(t, netErr)

		_, _, err := replayable(newReq(), 100)
		assert.EqualError(t, err, want, "with GetBody")
		_, err = readGetBody(newReq(), 100, nil)
		assert.EqualError(t, err, want, "readGetBody")
		req := newReq()
		req.GetBody = nil
		_, _, err = replayable(req, 100)
		assert.EqualError(t, err, want, "without GetBody")
	}
	assert.Zero(t, hits.Load())
}

func TestReplayableRefusesBodiesOverTheLimit(t *testing.T) {
	body := strings.Repeat("a", 101)
	req, err := http.NewRequest("POST", "http://api.test/", strings.NewReader(body))
	require.NoError(t, err)
	_, _, err = replayable(req, 100)
	assert.ErrorIs(t, err, errBodyTooLarge, "with GetBody")

	req.GetBody = nil
	r, _, err := replayable(req, 100)
	require.ErrorIs(t, err, errBodyTooLarge, "without GetBody")
	sent, _ := io.ReadAll(r.Body)
	assert.Equal(t, body, string(sent), "the body can still be sent once, whole")
	assert.Nil(t, r.GetBody)

	req, err = http.NewRequest("POST", "http://api.test/", strings.NewReader(body[:100]))
	require.NoError(t, err)
	_, got, err := replayable(req, 100)
	require.NoError(t, err, "a body of exactly limit bytes fits")
	assert.Len(t, got, 100)
}

func TestReadGetBodyReusesTheBufferItIsGiven(t *testing.T) {
	req, err := http.NewRequest("POST", "http://api.test/", bytes.NewReader([]byte(`{"model":"m"}`)))
	require.NoError(t, err)
	buf := make([]byte, 0, 64)
	got, err := readGetBody(req, 100, buf)
	require.NoError(t, err)
	assert.Equal(t, `{"model":"m"}`, string(got))
	assert.Same(t, &buf[:1][0], &got[0], "read into buf's storage")
}
