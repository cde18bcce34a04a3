package httpguard

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	pathpkg "path"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a bug: a server that routes a path leniently (IIS reads backslashes
// as slashes, Java's servers drop ;parameters, gateways resolve dot
// segments and empty ones) runs the Azure deployment the path names so,
// /openai\deployments\dear/... or /openai/deployments;v=1/dear/..., whatever
// model the body names. The Budget read the deployment in the path as
// sent alone, found none (or dear;v=1, priced at "*"), and priced the
// body's cheap model: the deployment was billed past the Limit. The path
// is now read as such servers route it too; a deployment read otherwise
// than sent is refused, and one only they read is priced.
func TestBudgetReadsTheDeploymentALenientServerRuns(t *testing.T) {
	prices := PriceTable{
		"cheap":       {Input: Dollar, Output: 2 * Dollar},
		"dear":        {Input: 1000 * Dollar, Output: 1000 * Dollar},
		FallbackModel: {Input: Dollar, Output: 2 * Dollar},
	}
	const limit = Cent
	var hits, billed atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		raw, _ := io.ReadAll(r.Body)
		p := r.URL.EscapedPath()
		if d, err := url.PathUnescape(p); err == nil {
			p = d
		}
		p = strings.ReplaceAll(p, `\`, "/")
		segs := strings.Split(p, "/")
		for i := range segs {
			segs[i], _, _ = strings.Cut(segs[i], ";")
		}
		p = pathpkg.Clean(strings.Join(segs, "/"))
		model := "cheap"
		if rest, ok := strings.CutPrefix(p, "/openai/deployments/"); ok {
			model, _, _ = strings.Cut(rest, "/")
		}
		price := prices[model]
		prompt, completion := int64(len(raw)), int64(100)
		billed.Add(int64((Money(prompt)*price.Input + Money(completion)*price.Output) / 1_000_000))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, model, prompt, completion)
	}))
	t.Cleanup(srv.Close)
	base := srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)

	for _, path := range []string{
		`/openai\deployments\dear/chat/completions`,
		`/openai/deployments;v=1/dear/chat/completions`,
		`/openai/deployments/dear;v=1/chat/completions`,
		`/openai;v=1/deployments/dear/chat/completions`,
		`/openai//deployments/dear/chat/completions`,
		`/openai/./deployments/dear/chat/completions`,
		`/openai/deployments/cheap/../dear/chat/completions`,
		`/openai/deployments/cheap\..\dear/chat/completions`,
	} {
		hits.Store(0)
		b := newTestBudget(t, BudgetConfig{Limit: limit, Prices: prices})
		client := &http.Client{Transport: Chain(base, b)}
		req, err := http.NewRequest(http.MethodPost, srv.URL+path+"?api-version=2024-10-21", strings.NewReader(chatBody("cheap", 100)))
		require.NoError(t, err)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		require.Error(t, err, path)
		assert.True(t, IsRefusal(err), "%s: %v", path, err)
		assert.Zero(t, hits.Load(), "%s: refused unsent", path)
	}
	assert.LessOrEqual(t, billed.Load(), int64(limit), "billed past the Limit")

	// A deployment the path names plainly is priced as before.
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	client := &http.Client{Transport: Chain(base, b)}
	resp, err := client.Post(srv.URL+"/openai/deployments/cheap/chat/completions?api-version=2024-10-21", "application/json", strings.NewReader(chatBody("cheap", 100)))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
