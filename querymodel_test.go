package httpguard

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// LiteLLM's chat endpoints take model as a query parameter too (for Azure
// clients), and the query's wins over the body's
// (common_processing_pre_call_logic: completion_model or user_model or
// model or data["model"]). A body naming a cheap model sent with
// ?model=<a dear one> was priced at the body's: against a server that runs
// the query's model, $0.2005 billed under a $0.05 Limit (found by a review
// of the proxy). It is priced at the dearer of the two, as an Azure
// deployment in the path is, and refused when the query's has no price.
func TestBudgetPricesTheModelTheQueryStringNames(t *testing.T) {
	prices := PriceTable{"cheap": {Input: 15 * Cent, Output: 60 * Cent}, "dear": {Input: 250 * Cent, Output: 1000 * Cent}}
	var billed atomic.Int64
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		cr, err := parseChatRequest(body)
		require.NoError(t, err)
		model := cr.Model
		if q := r.URL.Query()["model"]; len(q) > 0 && q[len(q)-1] != "" {
			model = q[len(q)-1] // as Starlette reads it: the last
		}
		billed.Add(int64(prices[model].Cost(Usage{InputTokens: int64(len(body)), OutputTokens: cr.MaxOutput})))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
			model, len(body), cr.MaxOutput)
	})
	for _, query := range []string{"?model=dear", "?mo%64el=d%65ar", "?api-version=1&model=dear"} {
		billed.Store(0)
		b := newTestBudget(t, BudgetConfig{Limit: Dollar / 10, Prices: prices})
		postOrRefused(t, api.client(t, b), api.srv.URL+"/v1/chat/completions"+query, chatBody("cheap", 1000), 20, ErrBudgetExceeded, "")
		assert.LessOrEqual(t, Money(billed.Load()), b.Limit(), "%s: the provider billed %v against a Limit of %v", query, Money(billed.Load()), b.Limit())
		assert.Equal(t, Money(billed.Load()), b.Spent(), query)
	}

	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	for _, query := range []string{"?model=", "?model", "?models=dear", "?Model=dear", "?model=cheap"} {
		readThrough(t, api, b, "/v1/chat/completions"+query, chatBody("cheap", 10))
	}
	assert.Equal(t, prices["cheap"].Cost(Usage{InputTokens: 5 * int64(len(chatBody("cheap", 10))), OutputTokens: 50}), b.Spent(),
		"a query string naming no model, an empty one, or the body's, runs the body's")

	for query, want := range map[string]string{
		"?model=unlisted":          `"unlisted"`,
		"?model=dear&model=cheap":  "twice",
		"?model=dear&model=":       "twice",
		"?model=d%zzear":           "cannot be read",
		"?x=1&model=cheap,dear&y=": `"cheap,dear"`,
	} {
		_, err := api.client(t, b).Post(api.srv.URL+"/v1/chat/completions"+query, "application/json", strings.NewReader(chatBody("cheap", 10)))
		require.ErrorIs(t, err, ErrUnknownModel, query)
		assert.ErrorContains(t, err, want, query)
	}
}

// A query string's model is read only for requests the Budget prices: a
// GET, a bodiless request or an exempt one passes whatever its query
// says, as it did before the Budget read queries.
func TestBudgetReadsTheQuerysModelOnlyForRequestsItPrices(t *testing.T) {
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Exempt: func(r *http.Request) bool { return r.Header.Get("X-Exempt") != "" }})
	client := api.client(t, b)
	const twice = "/v1/chat/completions?model=a&model=b"
	resp, err := client.Get(api.srv.URL + twice)
	require.NoError(t, err, "a GET")
	resp.Body.Close()
	req, err := http.NewRequest(http.MethodPost, api.srv.URL+twice, strings.NewReader(chatBody("m", 1)))
	require.NoError(t, err)
	req.Header.Set("X-Exempt", "1")
	resp, err = client.Do(req)
	require.NoError(t, err, "an exempt request")
	resp.Body.Close()
	_, err = client.Post(api.srv.URL+twice, "application/json", strings.NewReader(chatBody("m", 1)))
	require.ErrorIs(t, err, ErrUnknownModel, "a priced request")
	assert.ErrorContains(t, err, "twice")
}

// LiteLLM runs a model that holds commas as a batch, one completion per
// model (route_request: abatch_completion(models=model.split(","))), each
// billed. Priced by the "*" entry as one model, four runs were billed on
// one reservation ($0.1604 billed under a $0.05 Limit). A list that only
// "*" prices is refused; one the table lists by its own name is priced
// at that entry.
func TestBudgetRefusesAModelListOnlyTheFallbackPrices(t *testing.T) {
	prices := PriceTable{FallbackModel: {Input: Dollar, Output: Dollar}, "a,b": {Input: 2 * Dollar, Output: 2 * Dollar}}
	api := newFakeAPI(t, answerUsage(1, 1))
	b := newTestBudget(t, BudgetConfig{Limit: Dollar, Prices: prices})
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/chat/completions", chatBody("gpt-4o,gpt-4o,gpt-4o", 10), "several models"},
		{"/v1/chat/completions", `{"model":"m","fallbacks":["x, y"],"max_tokens":1,"messages":[]}`, `"x, y"`},
		{"/openai/deployments/x,y/chat/completions", chatBody("m", 10), `"x,y"`},
		{"/v1/chat/completions?model=" + url.QueryEscape("x,y"), chatBody("m", 10), `"x,y"`},
	} {
		_, err := api.client(t, b).Post(api.srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
		require.ErrorIs(t, err, ErrUnknownModel, tc.path+" "+tc.body)
		assert.ErrorContains(t, err, tc.want, tc.body)
	}
	assert.Zero(t, api.hits.Load(), "nothing was sent")
	readThrough(t, api, b, "/v1/chat/completions", chatBody("a,b", 10))
	assert.Equal(t, prices["a,b"].Cost(Usage{InputTokens: 1, OutputTokens: 1}), b.Spent(), "a list the table names is priced at its entry")
}

// FuzzQueryModel reads any query string without ';' (which Go's ParseQuery
// skips a pair for and Python's servers do not) as url.ParseQuery reads
// its model parameters: when QueryModel names a model, every model
// parameter holds it or is empty, and at least one holds it; when it
// names none, every one is empty; it is an error only for two that
// differ or one whose value cannot be unescaped.
func FuzzQueryModel(f *testing.F) {
	for _, q := range []string{"", "model=gpt-4o", "mo%64el=a&model=a", "model=a&model=b", "model=%zz", "model", "model=&x=1", "a=1&model=b+c", "%zz=1&model=x"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		if strings.Contains(q, ";") {
			return
		}
		m, err := QueryModel(q)
		vals, perr := url.ParseQuery(q)
		var nonEmpty []string
		for _, v := range vals["model"] {
			if v != "" {
				nonEmpty = append(nonEmpty, v)
			}
		}
		if err != nil {
			// ParseQuery skips a pair it cannot unescape, or reads two
			// values that differ.
			differ := len(vals["model"]) > 1 && slices.ContainsFunc(vals["model"], func(v string) bool { return v != vals["model"][0] })
			require.True(t, perr != nil || differ, "%q: %v", q, err)
			return
		}
		for _, v := range vals["model"] {
			require.Equal(t, m, v, "%q", q)
		}
		if m != "" {
			require.NotEmpty(t, nonEmpty, "%q", q)
		}
	})
}
