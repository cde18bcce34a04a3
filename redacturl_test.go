package httpguard

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the Retrier's log (and the Fallback's, and the *url.Error a
// Classifier is given) shows a request's URL without its user info and
// query, but a request built with an opaque URL (url.URL.Opaque, which
// net/http sends as written, set to keep a path's escapes:
// "//user:key@host/v1/...?key=...") kept both, and the key in them reached
// the log. The Budget's errors already left the user info out (errorPath).
func TestAnOpaqueURLsUserInfoAndQueryReachNoLog(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { resetConn(t, w) })
	var logs bytes.Buffer
	var seen []string
	p := DefaultRetryPolicy()
	p.MaxRetries = 1
	p.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p.Classify = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		var ue *url.Error
		if errors.As(err, &ue) {
			seen = append(seen, ue.URL)
		}
		return DefaultClassifier(ctx, resp, err)
	}
	r, _ := newTestRetrier(t, p)
	host := strings.TrimPrefix(s.URL, "http://")
	req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader("{}"))
	require.NoError(t, err)
	req.URL.Opaque = "//user:sk-userinfo-secret@" + host + "/v1/chat%2Fcompletions?key=sk-query-secret"

	_, err = clientFor(t, r).Transport.RoundTrip(req)

	require.Error(t, err)
	out := logs.String()
	require.Contains(t, out, "giving up")
	assert.Contains(t, out, "url=http://"+host+"/v1/chat%2Fcompletions ", "the log keeps the host and the path")
	assert.NotContains(t, out, "secret")
	require.NotEmpty(t, seen)
	for _, u := range seen {
		assert.NotContains(t, u, "secret")
	}
	assert.NotContains(t, err.Error(), "secret")
}

// The Budget names the path of a request it refuses unsent (a protocol
// upgrade, whose session no answer reports): an opaque URL's query, where
// a key may be written, is not part of it.
func TestABudgetRefusalNamesNoQueryOfAnOpaqueURL(t *testing.T) {
	s := newServer(t, func(http.ResponseWriter, *http.Request, int) {})
	b, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": {Input: Dollar, Output: Dollar}}})
	require.NoError(t, err)
	host := strings.TrimPrefix(s.URL, "http://")
	req, err := http.NewRequest(http.MethodGet, s.URL+"/v1/realtime", nil)
	require.NoError(t, err)
	req.URL.Opaque = "//user:sk-userinfo-secret@" + host + "/v1/realtime?key=sk-query-secret"
	req.Header.Set("Upgrade", "websocket")

	_, err = clientFor(t, b).Transport.RoundTrip(req)

	require.ErrorIs(t, err, ErrUnknownModel)
	assert.Contains(t, err.Error(), "//"+host+"/v1/realtime")
	assert.NotContains(t, err.Error(), "secret")
}

// The server runs the path an opaque URL sends, which ends at its '?':
// a query that ends like a free endpoint's path does not make a chat
// completion free, unpriced.
func TestABudgetPricesAnOpaqueURLByThePathBeforeItsQuery(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) { io.WriteString(w, "{}") })
	b, err := NewBudget(BudgetConfig{Limit: Dollar, Prices: PriceTable{"m": {Input: Dollar, Output: Dollar}}})
	require.NoError(t, err)
	for _, query := range []string{"?then=/moderations", "?then=/v1/messages/count_tokens", "?then=/responses/input_tokens"} {
		req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(`{"model":"unpriced","max_tokens":10,"messages":[]}`))
		require.NoError(t, err)
		req.URL.Opaque = "/v1/chat/completions" + query

		_, err = clientFor(t, b).Transport.RoundTrip(req)

		require.ErrorIs(t, err, ErrUnknownModel, query)
	}
	assert.Zero(t, s.hits.Load(), "nothing sent unpriced")
}
