package httpguardtest

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: Config.Latency plus a Delay of the largest Duration (a
// "forever" slow header) overflowed to a negative wait, and the server
// answered at once.
func TestADelayOfTheLargestDurationOnTopOfLatencyNeverAnswers(t *testing.T) {
	s := start(t, Config{Latency: time.Millisecond})
	require.NoError(t, s.Enqueue(SlowHeaders(math.MaxInt64)))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL()+"/chat/completions", strings.NewReader(chatBody))
	require.NoError(t, err)
	resp, err := s.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		assert.Fail(t, "answered", "status %s", resp.Status)
	}
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
