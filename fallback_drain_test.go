package httpguard

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// slowErrorBody is an error answer whose last bytes come just after the
// drain timer fired, and whose Close does not cut a read in progress.
type slowErrorBody struct{ done bool }

func (b *slowErrorBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	time.Sleep(2 * maxDrainTime)
	b.done = true
	return copy(p, `{"error":"overloaded"}`), io.EOF
}

func (b *slowErrorBody) Close() error { return nil }

// The drain timer of a failed target's error body closed resp.Body while
// keep replaced it with the buffered copy: a data race (seen as a -race
// failure of TestFailoverBreakerServesADegradedLastTarget on a busy
// machine), and the timer could close the copy instead of the real body.
func TestFallbackKeepsAnErrorBodyTheDrainTimerClosedWithoutARace(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
		Header: http.Header{}, Body: &slowErrorBody{}}
	kept := (&Fallback{}).keep(sentOutcome{}, 0, resp, nil)
	time.Sleep(maxDrainTime) // let the timer's goroutine finish
	if assert.NotNil(t, kept.resp) {
		body, err := io.ReadAll(kept.resp.Body)
		assert.NoError(t, err)
		assert.Equal(t, `{"error":"overloaded"}`, string(body))
	}
}
