package otelguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/holysheep/httpguard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Was a bug (found by a review): with a FallbackModel ("*") price, the Budget prices any
// model a request names, and OnSettle labels httpguard.spend and
// httpguard.tokens with that name verbatim (Settlement.Model is the
// request's model, though budget.go documents it as "the model the attempt
// was priced at"). A caller or a gateway's tenant choosing the model string
// then makes one time series per string: unbounded cardinality from
// request data. The label should be the price-table entry that priced the
// attempt ("*" here), whose set is bounded by the table.
func TestModelLabelIsBoundedByThePriceTable(t *testing.T) {
	srv := faultServer(t)
	m, reader := newMetrics(t)
	table := httpguard.PriceTable{httpguard.FallbackModel: {Input: 28 * httpguard.Cent, Output: 42 * httpguard.Cent}}
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: table, MaxWait: -1, OnSettle: m.OnSettle()})
	require.NoError(t, err)
	client := clientOf(t, srv, budget)

	const n = 20
	for i := range n {
		body := fmt.Sprintf(`{"model":"user-chosen-%d","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, i)
		resp, err := client.Post(srv.BaseURL()+"/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	series := map[string]int{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if s, ok := md.Data.(metricdata.Sum[float64]); ok {
				series[md.Name] += len(s.DataPoints)
			}
			if s, ok := md.Data.(metricdata.Sum[int64]); ok {
				series[md.Name] += len(s.DataPoints)
			}
		}
	}
	assert.Equal(t, 1, series["httpguard.spend"], "one price-table entry priced every attempt")
	assert.Equal(t, 2, series["httpguard.tokens"], "input and output of that one entry")
}

// failingTotals is a memory store whose Totals fails while down is set, as
// a shared store does during an outage.
type failingTotals struct {
	*httpguard.MemoryBudgetStore
	down bool
}

func (s *failingTotals) Totals(ctx context.Context, window string) (httpguard.Money, httpguard.Money, error) {
	if s.down {
		return 0, 0, errors.New("store unreachable")
	}
	return s.MemoryBudgetStore.Totals(ctx, window)
}

// Was a bug (found by a review): ObserveBudget reported b.Remaining(), which is 0 when the
// store fails. While a shared store is unreachable, httpguard.budget.remaining
// then says the Budget is exhausted (nothing spent here: $1 is left), which
// fires "budget exhausted" alerts on a store outage. A failed read should
// record no point for that collection, not a false 0.
func TestRemainingIsNotZeroWhenTheStoreFails(t *testing.T) {
	m, reader := newMetrics(t)
	store := &failingTotals{MemoryBudgetStore: httpguard.NewMemoryBudgetStore(), down: true}
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: prices, Store: store})
	require.NoError(t, err)
	t.Cleanup(m.ObserveBudget(budget))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name != "httpguard.budget.remaining" {
				continue
			}
			for _, p := range md.Data.(metricdata.Gauge[float64]).DataPoints {
				assert.NotZero(t, p.Value, "nothing was spent: the store failed, the budget is not exhausted")
			}
		}
	}
}
