package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: the Budget let a GET of …/responses/{id} pass unpriced
// whatever else the request said, so a chat completion could go by as a
// retrieval: with a .. segment (escaped or not) that a gateway in front of
// the provider resolves (nginx, Envoy's normalize_path, Cloudflare's URL
// normalization), and a method-override header that a frontend honours
// (Google's, Express's method-override), or a path-override one (IIS's
// URL Rewrite), the provider ran, and billed, a POST /v1/chat/completions
// the Budget never priced. A retrieval is now a GET whose path ends with
// /responses/{id} (or /responses/{id}/input_items), holds no . or ..
// segment, escape or backslash, and that carries no override header;
// anything else is priced.
func TestBudgetPricesAChatCompletionDressedAsAResponseRetrieval(t *testing.T) {
	var billed atomic.Int64
	// The gateway: it takes the method an override names and the path an
	// override names, decodes the path and resolves its dot segments, and
	// runs what that comes to. The provider bills every chat completion.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, p := r.Method, r.URL.Path
		for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
			if v := r.Header.Get(h); v != "" {
				method = v
			}
		}
		for _, h := range []string{"X-Original-Url", "X-Rewrite-Url"} {
			if v := r.Header.Get(h); v != "" {
				p = v
			}
		}
		p = strings.ReplaceAll(p, `\`, "/")
		if d, err := url.PathUnescape(p); err == nil {
			p = d
		}
		body, _ := io.ReadAll(r.Body)
		if strings.HasSuffix(path.Clean(p), "/chat/completions") && (method == http.MethodPost || r.Header.Get("X-Runs-Any-Method") != "") {
			billed.Add(1)
			answerBound(w, r, body)
			return
		}
		io.WriteString(w, `{"id":"resp_1","object":"response"}`)
	}))
	t.Cleanup(srv.Close)
	base := srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)

	body := chatBody("m", 100000) // $0.2 and more: far beyond the Limit
	for _, c := range []struct {
		path   string
		header []string
	}{
		{"/v1/responses/resp_1", []string{"X-HTTP-Method-Override", "POST"}},
		{"/v1/responses/resp_1", []string{"X-HTTP-Method", "POST"}},
		{"/v1/responses/resp_1", []string{"X-Method-Override", "POST"}},
		{"/v1/responses/resp_1", []string{"X-Original-URL", "/v1/chat/completions"}},
		{"/v1/responses/resp_1", []string{"X-Rewrite-URL", "/v1/chat/completions"}},
		{"/v1/responses/resp_1/../../chat/completions", []string{"X-HTTP-Method-Override", "POST"}},
		{"/v1/responses/%2e%2e/chat/completions", []string{"X-HTTP-Method-Override", "POST"}},
		{"/v1/responses/%2E%2E/chat/completions", []string{"X-HTTP-Method-Override", "POST"}},
		{"/v1/responses/resp_1/%2e%2e/%2e%2e/chat/completions", []string{"X-Runs-Any-Method", "1"}},
		{`/v1/responses/resp_1\..\..\chat\completions`, []string{"X-Runs-Any-Method", "1"}},
		{"/v1/responses/resp_1/../../chat/completions", []string{"X-Runs-Any-Method", "1"}},
		{"/v1/responses/./../chat/completions", []string{"X-Runs-Any-Method", "1"}},
		{"/openai/deployments/responses/chat/completions", []string{"X-Runs-Any-Method", "1"}},
		{"/v1/responses/%252e%252e/chat/completions", nil},
	} {
		// A deployment named responses is priced as m.
		b := newTestBudget(t, BudgetConfig{Limit: Cent, Prices: PriceTable{"m": testPrices["m"], "responses": testPrices["m"]}})
		req, err := http.NewRequest(http.MethodGet, srv.URL+c.path, strings.NewReader(body))
		require.NoError(t, err)
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		resp, err := (&http.Client{Transport: Chain(base, b)}).Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		assert.ErrorIs(t, err, ErrBudgetExceeded, "%s %v: priced, and beyond the Limit", c.path, c.header)
		assert.Zero(t, billed.Load(), "%s %v: billed", c.path, c.header)
		billed.Store(0)
	}
}

// The retrievals openai-go sends still pass unpriced: a GET of a stored
// response, or of its input items, with a body naming no model, also
// under a prefix, and with a query.
func TestBudgetStillPassesPlainResponseRetrievals(t *testing.T) {
	api := newFakeAPI(t, answerBound)
	b := newTestBudget(t, BudgetConfig{Limit: Cent})
	paths := []string{
		"/v1/responses/resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
		"/v1/responses/resp_1?stream=true&starting_after=3",
		"/v1/responses/resp_1/input_items?limit=20",
		"/openai/v1/responses/resp_1",
		"/openai/responses/resp_1?api-version=2025-04-01-preview",
	}
	for _, p := range paths {
		req, err := http.NewRequest(http.MethodGet, api.srv.URL+p, strings.NewReader(`{"stream":true}`))
		require.NoError(t, err)
		resp, err := api.client(t, b).Do(req)
		require.NoError(t, err, p)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.EqualValues(t, len(paths), api.hits.Load())
	assert.Zero(t, b.Spent())
}
