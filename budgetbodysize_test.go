package httpguard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A prompt with a few images inline passes the default 4 MiB soon. The
// refusal said only that the body was over MaxBufferedBody and "cannot be
// priced: unknown model"; it now says which field to raise, or how to let
// such requests pass.
func TestABudgetRefusingALargeBodySaysWhatToRaise(t *testing.T) {
	api := newServer(t, func(http.ResponseWriter, *http.Request, int) {})
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	b, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: ExamplePrices(), MaxBufferedBody: 64})
	require.NoError(t, err)
	client := &http.Client{Transport: Chain(transport, b)}
	body := `{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` + strings.Repeat("a", 100) + `"}]}`
	_, err = client.Post(api.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	require.ErrorIs(t, err, ErrUnknownModel)
	assert.ErrorContains(t, err, "httpguard: budget: request body over MaxBufferedBody (64 bytes) cannot be priced: "+
		"raise BudgetConfig.MaxBufferedBody, or exempt such requests with BudgetConfig.Exempt: unknown model")
	assert.Zero(t, api.hits.Load())
}
