package httpguard

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// slowErrorBody is an error answer whose last bytes come just after the
// keep timer fired, and whose Close does not cut a read in progress.
type slowErrorBody struct{ done bool }

func (b *slowErrorBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	time.Sleep(maxKeptBodyTime + 10*time.Millisecond)
	b.done = true
	return copy(p, `{"error":"overloaded"}`), io.EOF
}

func (b *slowErrorBody) Close() error { return nil }

// The keep timer of a failed target's error body closed resp.Body while
// keep replaced it with the buffered copy: a data race (seen as a -race
// failure of TestFailoverBreakerServesADegradedLastTarget on a busy
// machine), and the timer could close the copy instead of the real body.
func TestFallbackKeepsAnErrorBodyTheKeepTimerClosedWithoutARace(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
		Header: http.Header{}, Body: &slowErrorBody{}}
	keepBody(resp, "primary")
	time.Sleep(20 * time.Millisecond) // let the timer's goroutine finish
	body, err := io.ReadAll(resp.Body)
	assert.NoError(t, err, "the read the timer could not cut ended the body")
	assert.Equal(t, `{"error":"overloaded"}`, string(body))
}
