package httpguardtest

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStallBodySendsTheHeadersAndHalfTheBodyThenTheRest(t *testing.T) {
	s := start(t, Config{})
	f := ServiceUnavailable()
	f.StallBody = 50 * time.Millisecond
	require.NoError(t, s.Enqueue(f))
	resp, err := post(t, s, "/v1/chat/completions", chatBody)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Positive(t, resp.ContentLength)

	head := make([]byte, resp.ContentLength)
	n, err := io.ReadAtLeast(resp.Body, head, 1)
	require.NoError(t, err)
	assert.Equal(t, int(resp.ContentLength/2), n, "half the body arrives with the headers")
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "then the rest, after the stall")
	assert.Contains(t, string(head[:n])+string(rest), "temporarily unable")
}

func TestCloseEndsAStalledBody(t *testing.T) {
	s, err := NewServer(Config{})
	require.NoError(t, err)
	f := ServiceUnavailable()
	f.StallBody = time.Hour
	require.NoError(t, s.Enqueue(f))
	resp, err := post(t, s, "/v1/chat/completions", chatBody)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, err = bufio.NewReader(resp.Body).ReadByte()
	require.NoError(t, err)

	s.Close() // returns only once the stalled handler has
	_, err = io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestStallBodyNeedsAnErrorStatus(t *testing.T) {
	s := start(t, Config{})
	assert.ErrorContains(t, s.Enqueue(Fault{StallBody: time.Second}), "StallBody needs Status")
	assert.ErrorContains(t, s.Enqueue(Fault{Status: 503, StallBody: -1}), "StallBody must be >= 0")
}
