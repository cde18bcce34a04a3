package httpguard

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A URL with Opaque set is sent with Opaque as its path (url.URL's way of
// sending a path exactly as written): a request whose Path names a free
// endpoint but whose Opaque names chat completions is billed, so it is
// priced.
func TestBudgetPricesARequestWhoseOpaquePathIsBilled(t *testing.T) {
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/v1/chat/completions" {
			billed.Add(int64(reservation(string(body), 100)))
		}
		answerBound(w, r, body)
	})
	b := newTestBudget(t, BudgetConfig{Limit: reservation(chatBody("m", 100), 100) * 5 / 2})
	client := api.client(t, b)
	for range 5 {
		req, err := http.NewRequest("POST", api.srv.URL+"/v1/moderations", strings.NewReader(chatBody("m", 100)))
		require.NoError(t, err)
		req.URL.Opaque = "/v1/chat/completions"
		resp, err := client.Do(req)
		if err != nil {
			require.ErrorIs(t, err, ErrBudgetExceeded)
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
	}
	require.Positive(t, billed.Load(), "the requests reached chat completions")
	assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "the provider billed %v against a Limit of %v", Money(billed.Load()), b.Limit())
	assert.Equal(t, Money(billed.Load()), b.Spent())
}

func TestFreeEndpointReadsTheOpaquePathSent(t *testing.T) {
	for _, c := range []struct {
		path, opaque string
		free         bool
	}{
		{"/v1/moderations", "", true},
		{"/v1/moderations", "/v1/chat/completions", false},
		{"/v1/chat/completions", "/v1/moderations", true},
		{"/v1/chat/completions", "//api.example.com/v1/messages/count_tokens", true},
	} {
		req, err := http.NewRequest("POST", "https://api.example.com"+c.path, nil)
		require.NoError(t, err)
		req.URL.Opaque = c.opaque
		assert.Equal(t, c.free, FreeEndpoint(req), "path %q, opaque %q", c.path, c.opaque)
	}
}
