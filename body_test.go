package httpguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
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

// roomReader records the room each Read is offered, and gives one byte
// and then an error.
type roomReader struct{ rooms []int }

func (r *roomReader) Read(p []byte) (int, error) {
	r.rooms = append(r.rooms, cap(p))
	if len(r.rooms) > 1 {
		return 0, errors.New("the client went away")
	}
	p[0] = '{'
	return 1, nil
}

// A declared length is a claim: a body that declares megabytes and sends a
// byte does not get megabytes of buffer while it is awaited.
func TestABodyDeclaringMegabytesGetsBufferOnlyAsItsBytesArrive(t *testing.T) {
	const declared = 8 << 20
	for name, read := range map[string]func(*http.Request) error{
		"Body": func(req *http.Request) error {
			_, _, err := replayable(req, declared)
			return err
		},
		"GetBody": func(req *http.Request) error {
			_, err := readGetBody(req, declared, nil)
			return err
		},
	} {
		r := &roomReader{}
		req, err := http.NewRequest("POST", "http://api.test/v1/chat/completions", r)
		require.NoError(t, err)
		req.ContentLength = declared
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(r), nil }
		require.Error(t, read(req), name)
		require.NotEmpty(t, r.rooms, name)
		assert.LessOrEqual(t, slices.Max(r.rooms), 1<<20, "%s: room offered before the bytes came: %d", name, slices.Max(r.rooms))
	}
}
