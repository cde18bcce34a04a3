package otelguard

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// rig is a fault server, a Metrics on a manual reader, and a client whose
// stack is Requests → Retrier → Budget → Limiter → Attempts, every hook
// wired.
type rig struct {
	srv    *httpguardtest.Server
	reader *sdkmetric.ManualReader
	m      *Metrics
	budget *httpguard.Budget
	client *http.Client
}

var prices = httpguard.PriceTable{"deepseek-v3.2": {Input: 28 * httpguard.Cent, Output: 42 * httpguard.Cent}}

// newMetrics returns Metrics on a meter provider whose reader the test
// collects from.
func newMetrics(t *testing.T) (*Metrics, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	m, err := New(mp)
	require.NoError(t, err)
	return m, reader
}

// faultServer is an httpguardtest server, closed when t ends.
func faultServer(t *testing.T) *httpguardtest.Server {
	t.Helper()
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return srv
}

// clientOf is a client that sends through layers to srv, on a transport of
// its own whose idle connections close when t ends.
func clientOf(t *testing.T, srv *httpguardtest.Server, layers ...httpguard.Layer) *http.Client {
	base := srv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: httpguard.Chain(base, layers...)}
}

func newRig(t *testing.T, limit httpguard.Money, limits httpguard.LimitConfig) *rig {
	t.Helper()
	srv := faultServer(t)
	m, reader := newMetrics(t)

	policy := httpguard.DefaultRetryPolicy()
	policy.BaseDelay, policy.Jitter = time.Millisecond, 0
	policy.OnRetry = m.OnRetry()
	retrier, err := httpguard.NewRetrier(policy)
	require.NoError(t, err)
	budget, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: prices, MaxWait: -1,
		OnSettle: m.OnSettle(attribute.String("budget", "test"))})
	require.NoError(t, err)
	t.Cleanup(m.ObserveBudget(budget, attribute.String("budget", "test")))
	limits.OnThrottle = m.OnThrottle(attribute.String("tenant", "a"))
	limiter, err := httpguard.NewLimiter(limits)
	require.NoError(t, err)
	client := clientOf(t, srv, m.Requests(), retrier, budget, limiter, m.Attempts())
	return &rig{srv: srv, reader: reader, m: m, budget: budget, client: client}
}

const chat = `{"model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"Say ok."}]}`

func (r *rig) send(t *testing.T, ctx context.Context) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.BaseURL()+"/chat/completions", strings.NewReader(chat))
	require.NoError(t, err)
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// collect returns every data point recorded, by instrument name.
func (r *rig) collect(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// value returns the value of the counter point with exactly attrs, 0 when
// there is none.
func value[N int64 | float64](t *testing.T, data metricdata.Aggregation, attrs ...attribute.KeyValue) N {
	t.Helper()
	want := attribute.NewSet(attrs...)
	s, ok := data.(metricdata.Sum[N])
	require.True(t, ok, "%T", data)
	for _, p := range s.DataPoints {
		if p.Attributes.Equals(&want) {
			return p.Value
		}
	}
	return 0
}

func sum(t *testing.T, data metricdata.Aggregation, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	return value[int64](t, data, attrs...)
}

func TestCountsAttemptsAndRetriesByReason(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	require.NoError(t, r.srv.Enqueue(httpguardtest.ServiceUnavailable(), httpguardtest.ConnectionReset()))
	ctx := ContextWithAttributes(context.Background(), attribute.String("tenant", "a"))
	status, err := r.send(t, ctx)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)

	got := r.collect(t)
	tenant := attribute.String("tenant", "a")
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], tenant, keyStatus.Int(503)))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], tenant, keyError.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.attempts"], tenant, keyStatus.Int(200)))
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], tenant, keyReason.String("status_503")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], tenant, keyReason.String("connection")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], tenant, keyOutcome.String("answered"), keyStatus.Int(200)))
}

func TestRecordsSpendTokensAndWhatRemainsOfTheBudget(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	ctx := ContextWithAttributes(context.Background(), attribute.String("tenant", "a"))
	_, err := r.send(t, ctx)
	require.NoError(t, err)
	spent := r.budget.Spent()
	require.Positive(t, spent)

	got := r.collect(t)
	attrs := []attribute.KeyValue{attribute.String("budget", "test"), attribute.String("tenant", "a"), keyModel.String("deepseek-v3.2")}
	assert.InDelta(t, dollars(spent), value[float64](t, got["httpguard.spend"], attrs...), 1e-12)
	st := r.srv.Stats()
	assert.Equal(t, st.PromptTokens, sum(t, got["httpguard.tokens"], append(attrs, keyToken.String("input"))...))
	assert.Equal(t, st.CompletionTokens, sum(t, got["httpguard.tokens"], append(attrs, keyToken.String("output"))...))
	gauge, ok := got["httpguard.budget.remaining"].(metricdata.Gauge[float64])
	require.True(t, ok)
	require.Len(t, gauge.DataPoints, 1)
	assert.InDelta(t, dollars(httpguard.Dollar-spent), gauge.DataPoints[0].Value, 1e-12)
}

func TestStopsObservingABudget(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{})
	other, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Cent, Prices: prices})
	require.NoError(t, err)
	stop := r.m.ObserveBudget(other, attribute.String("budget", "other"))
	assert.Len(t, r.collect(t)["httpguard.budget.remaining"].(metricdata.Gauge[float64]).DataPoints, 2)
	stop()
	assert.Len(t, r.collect(t)["httpguard.budget.remaining"].(metricdata.Gauge[float64]).DataPoints, 1)
}

func TestCountsRefusalsByLayer(t *testing.T) {
	r := newRig(t, 10*httpguard.Nanodollar, httpguard.LimitConfig{})
	_, err := r.send(t, context.Background())
	require.ErrorIs(t, err, httpguard.ErrBudgetExceeded)

	limited := newRig(t, httpguard.Dollar, httpguard.LimitConfig{RequestsPerSecond: 0.01, Burst: 1, MaxWait: -1})
	_, err = limited.send(t, context.Background())
	require.NoError(t, err)
	_, err = limited.send(t, context.Background())
	require.ErrorIs(t, err, httpguard.ErrRateLimited)

	got := r.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.refusals"], keyLayer.String("budget"), keyReason.String("budget_exceeded")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.requests"], keyOutcome.String("refused")))
	assert.Nil(t, got["httpguard.attempts"], "nothing was sent")
	got = limited.collect(t)
	assert.EqualValues(t, 1, sum(t, got["httpguard.refusals"], keyLayer.String("limiter"), keyReason.String("rate_limited")))
	hist, ok := got["httpguard.limiter.wait"].(metricdata.Histogram[float64])
	require.True(t, ok)
	require.Len(t, hist.DataPoints, 1)
	p := hist.DataPoints[0]
	want := attribute.NewSet(attribute.String("tenant", "a"), keyReason.String("requests"), keyRejected.Bool(true))
	assert.True(t, p.Attributes.Equals(&want), p.Attributes.Encoded(attribute.DefaultEncoder()))
	assert.EqualValues(t, 1, p.Count)
	assert.Greater(t, p.Sum, 90.0, "the turn was about 100s away")
}

func TestCountsTheServerSignalsTheLimiterFollows(t *testing.T) {
	r := newRig(t, httpguard.Dollar, httpguard.LimitConfig{RequestsPerSecond: 100, Burst: 1})
	require.NoError(t, r.srv.Enqueue(httpguardtest.RateLimited(time.Millisecond)))
	_, err := r.send(t, context.Background())
	require.NoError(t, err)
	got := r.collect(t)
	tenant := attribute.String("tenant", "a")
	assert.EqualValues(t, 1, sum(t, got["httpguard.limiter.server_signals"], tenant, keyReason.String("slow-down")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.limiter.server_signals"], tenant, keyReason.String("server-pause")))
	assert.EqualValues(t, 1, sum(t, got["httpguard.retries"], keyReason.String("status_429")))
}

func TestContextAttributesAddUpAndTheLaterWins(t *testing.T) {
	ctx := ContextWithAttributes(context.Background(), attribute.String("tenant", "a"), attribute.String("route", "x"))
	child := ContextWithAttributes(ctx, attribute.String("tenant", "b"))
	set := func(ctx context.Context) attribute.Set {
		return metric.NewAddConfig([]metric.AddOption{attributes(ctx, []attribute.KeyValue{attribute.String("static", "s")})}).Attributes()
	}
	assert.Equal(t, attribute.NewSet(attribute.String("static", "s"), attribute.String("tenant", "b"), attribute.String("route", "x")), set(child))
	assert.Equal(t, attribute.NewSet(attribute.String("static", "s"), attribute.String("tenant", "a"), attribute.String("route", "x")), set(ctx),
		"the parent context is unchanged")
}
