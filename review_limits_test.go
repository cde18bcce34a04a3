package httpguard

// Bugs found by the adversarial review of the Retrier and the Limiter
// (2026-11-30); each test failed before its fix.

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A JSON body without GetBody whose length differs from its ContentLength
// is refused by the Limiter, as net/http and the other layers refuse it,
// rather than sent whole under a ContentLength the Limiter rewrote.
func TestLimiterRefusesABodyNotAsLongAsDeclared(t *testing.T) {
	clk := newFakeClock(moveOn)
	l := newTestLimiter(t, LimitConfig{}, clk)
	srv, client, arrived := newLimitedServer(t, l, clk, nil)
	body := `{"model":"m","max_tokens":1}`
	for _, cl := range []int64{5, int64(len(body)) + 5} {
		req, err := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader(body)))
		require.NoError(t, err)
		req.ContentLength = cl
		resp, err := client.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		require.Error(t, err, "ContentLength %d", cl)
		assert.Contains(t, err.Error(), "ContentLength=", "ContentLength %d", cl)
		assert.True(t, IsRefusal(err), "ContentLength %d: nothing was sent", cl)
	}
	assert.Zero(t, arrived.n.Load(), "the server received no request")
}
