package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A caller that set its own Body after http.NewRequest (a middleware that
// lowers max_tokens, say, leaving GetBody as it was) and asks for a
// stream, to which the Budget adds include_usage: what the server
// receives is what was priced, so that the Limit holds against its bill.
func TestBudgetStreamsTheBodyItPricedWhenBodyAndGetBodyDiffer(t *testing.T) {
	const (
		dear  = `{"model":"m","stream":true,"max_tokens":100000,"messages":[]}`
		cheap = `{"model":"m","stream":true,"max_tokens":1     ,"messages":[]}`
	)
	require.Equal(t, len(dear), len(cheap))
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		cr, err := parseChatRequest(body)
		require.NoError(t, err)
		// The server runs what it received: its prompt, and all of max_tokens.
		billed.Add(int64(reservation(string(body), int(cr.MaxOutput))))
		answerStream(streamOf(fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d}`, len(body), cr.MaxOutput), "a"))(w, r, body)
	})
	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	req, err := http.NewRequest(http.MethodPost, api.srv.URL+"/v1/chat/completions", strings.NewReader(dear))
	require.NoError(t, err)
	req.Body = io.NopCloser(strings.NewReader(cheap)) // GetBody stays http.NewRequest's, over dear
	resp, err := api.client(t, b).Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.LessOrEqual(t, billed.Load(), int64(Cent), "billed %v for a Limit of %v; the server received %q", Money(billed.Load()), Cent, api.bodies)
	if assert.Len(t, api.bodies, 1) {
		assert.Equal(t, `{"stream_options":{"include_usage":true},`+cheap[1:], api.bodies[0], "the body priced, with include_usage")
	}
}
