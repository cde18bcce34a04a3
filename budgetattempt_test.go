package httpguard

import (
	"bytes"
	"net/http"
	"net/http/httptrace"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// traceAskingTransport asks for the request's trace from several goroutines
// at once, as exchanges a layer below runs side by side would, and answers
// as cannedTransport does.
type traceAskingTransport struct {
	traces []*httptrace.ClientTrace
}

func (t *traceAskingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var wg sync.WaitGroup
	for i := range t.traces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.traces[i] = httptrace.ContextClientTrace(req.Context())
		}()
	}
	wg.Wait()
	return cannedTransport{openAIJSON}.RoundTrip(req)
}

// The attempt sets its trace's hooks when a transport first asks for the
// trace; every asker, however many at once, gets them set.
func TestBudgetAttemptHooksItsTraceForEveryAsker(t *testing.T) {
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: ExamplePrices()})
	below := &traceAskingTransport{traces: make([]*httptrace.ClientTrace, 8)}
	req, err := http.NewRequest(http.MethodPost, "http://api.test/v1/chat/completions", bytes.NewReader(benchBody))
	require.NoError(t, err)
	resp, err := b.Wrap(below).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	for _, trace := range below.traces {
		require.NotNil(t, trace)
		assert.Same(t, below.traces[0], trace)
		assert.NotNil(t, trace.GetConn)
		assert.NotNil(t, trace.WroteRequest)
	}
}
