package integration

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const outageCalls = 1000

// Into a full outage, openai-go's own retries send MaxRetries+1 requests
// for every call; under the Retrier (whose final 503 says X-Should-Retry:
// false) the retry budget stops retrying after the first failures and the
// server sees about one request per call.
func TestOpenAIGoOutageAmplification(t *testing.T) {
	for _, c := range []struct {
		name    string
		client  func(t *testing.T) *http.Client
		opts    []option.RequestOption
		atLeast float64
		atMost  float64
	}{
		{"SDK retries only, MaxRetries 3", func(t *testing.T) *http.Client { return guardedClient(t) },
			[]option.RequestOption{option.WithMaxRetries(retrierMaxRetries), option.WithMaxRetryDelay(time.Millisecond)}, 4, 4},
		{"Retrier under SDK defaults", func(t *testing.T) *http.Client { return guardedClient(t, newRetrier(t, fastPolicy())) },
			nil, 1, 1.2},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAPI(t, always(http.StatusServiceUnavailable, openAIUnavailable))
			client := newOpenAIGo(a, c.client(t), c.opts...)
			for range outageCalls {
				_, err := client.Chat.Completions.New(context.Background(), openAIChat())
				require.Error(t, err)
			}
			perCall := float64(a.hits.Load()) / outageCalls
			t.Logf("%d calls into a full outage, %d requests: %.3f per call", outageCalls, a.hits.Load(), perCall)
			assert.GreaterOrEqual(t, perCall, c.atLeast)
			assert.LessOrEqual(t, perCall, c.atMost)
		})
	}
}
