package otelguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/holysheep/httpguard"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter Metrics records with.
const ScopeName = "github.com/holysheep/httpguard/otelguard"

// Attribute keys the instruments use besides the caller's.
const (
	keyOutcome  = attribute.Key("outcome")
	keyStatus   = attribute.Key("http.response.status_code")
	keyError    = attribute.Key("error.type")
	keyReason   = attribute.Key("httpguard.reason")
	keyLayer    = attribute.Key("httpguard.layer")
	keyRejected = attribute.Key("httpguard.rejected")
	keyModel    = attribute.Key("gen_ai.request.model")
	keyToken    = attribute.Key("gen_ai.token.type")
	keyCircuit  = attribute.Key("httpguard.circuit")
	keyFrom     = attribute.Key("httpguard.from")
	keyTo       = attribute.Key("httpguard.to")
)

// Metrics records httpguard's layers on one meter. Make one with New and
// wire its hooks and Layers into the stack (see the package documentation).
// A nil *Metrics, or the zero Metrics, records nothing: its Layers pass
// requests through and its hooks are nil, so that a program that goes on
// without metrics (New failed, or its configuration left them off) needs
// no if. A Metrics is safe for concurrent use by multiple goroutines.
type Metrics struct {
	requests, attempts, retries, refusals, signals, tokens metric.Int64Counter
	stateChanges, switches                                 metric.Int64Counter

	wait  metric.Float64Histogram
	spend metric.Float64Counter

	mu       sync.Mutex
	budgets  map[*observedBudget]struct{}
	circuits map[string]struct{} // the circuit keys labelled so far, at most maxCircuitLabels
}

// maxCircuitLabels bounds the values of httpguard.circuit: a Breaker's
// default key holds the model a request names, which callers choose. The
// first maxCircuitLabels keys that change state are labelled with their
// key; later ones share otherCircuit.
const (
	maxCircuitLabels = 64
	otherCircuit     = "_other"
)

// off reports whether m records nothing: it is nil, or the zero Metrics.
func (m *Metrics) off() bool { return m == nil || m.requests == nil }

type observedBudget struct {
	b     *httpguard.Budget
	attrs metric.MeasurementOption
}

// New creates the instruments on a meter of mp; a nil mp means the global
// MeterProvider (otel.GetMeterProvider). It returns an error when the
// provider cannot create them.
func New(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(ScopeName)
	m := &Metrics{budgets: make(map[*observedBudget]struct{}), circuits: make(map[string]struct{})}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	m.requests = counter("httpguard.requests", "{request}", "Requests that left the httpguard stack, by outcome.")
	m.attempts = counter("httpguard.attempts", "{attempt}", "Attempts sent to the server, retries included.")
	m.retries = counter("httpguard.retries", "{retry}", "Retries the Retrier decided, by reason.")
	m.refusals = counter("httpguard.refusals", "{request}", "Requests a layer refused, by layer: before any attempt was sent, or a retry after some.")
	m.signals = counter("httpguard.limiter.server_signals", "{event}", "Server pauses and request-rate decreases the Limiter followed.")
	m.tokens = counter("httpguard.tokens", "{token}", "Tokens the Budget charged, by model and type.")
	m.stateChanges = counter("httpguard.breaker.state_changes", "{change}", "State changes of the Breaker's circuits, by circuit.")
	m.switches = counter("httpguard.fallback.switches", "{switch}", "Requests the Fallback moved to its next target, by target and reason.")
	var err error
	m.wait, err = meter.Float64Histogram("httpguard.limiter.wait", metric.WithUnit("s"),
		metric.WithDescription("How long each wait for a turn lasted, or would have when rejected; a request may wait more than once."),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	errs = append(errs, err)
	m.spend, err = meter.Float64Counter("httpguard.spend", metric.WithUnit("USD"),
		metric.WithDescription("US dollars the Budget charged, by model."))
	errs = append(errs, err)
	_, err = meter.Float64ObservableGauge("httpguard.budget.remaining", metric.WithUnit("USD"),
		metric.WithDescription("US dollars left in the current window of each observed Budget."),
		metric.WithFloat64Callback(m.observeRemaining))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelguard: %w", err)
	}
	return m, nil
}

type attrsKey struct{}

// ContextWithAttributes returns a copy of ctx carrying attrs, added to what
// the hooks and Layers record for a request made with that context (all but
// OnThrottle, whose events name no request). Attributes already in ctx are
// kept; a later one with the same key wins.
func ContextWithAttributes(ctx context.Context, attrs ...attribute.KeyValue) context.Context {
	prev, _ := ctx.Value(attrsKey{}).([]attribute.KeyValue)
	return context.WithValue(ctx, attrsKey{}, append(prev[:len(prev):len(prev)], attrs...))
}

// attributes returns the measurement option for the static attrs, the
// context's and extra.
func attributes(ctx context.Context, static []attribute.KeyValue, extra ...attribute.KeyValue) metric.MeasurementOption {
	fromCtx, _ := ctx.Value(attrsKey{}).([]attribute.KeyValue)
	all := make([]attribute.KeyValue, 0, len(static)+len(fromCtx)+len(extra))
	all = append(append(append(all, static...), fromCtx...), extra...)
	return metric.WithAttributeSet(attribute.NewSet(all...))
}

// OnRetry returns a RetryPolicy.OnRetry hook that counts retries by reason.
func (m *Metrics) OnRetry(attrs ...attribute.KeyValue) func(httpguard.RetryEvent) {
	if m.off() {
		return nil
	}
	return func(e httpguard.RetryEvent) {
		ctx := context.Background()
		if e.Request != nil {
			ctx = e.Request.Context()
		}
		m.retries.Add(context.Background(), 1, attributes(ctx, attrs, keyReason.String(retryReason(e))))
	}
}

// retryReason names why an attempt is retried, with few enough values for
// a metric label.
func retryReason(e httpguard.RetryEvent) string {
	if errors.Is(e.Reason, httpguard.ErrServerSaidRetry) {
		return "server_said_retry"
	}
	return failureReason(e.StatusCode, e.Err)
}

// failureReason names what an attempt ended in: an open circuit, a
// Limiter's refusal, a Fallback's skip of a target, the status of an
// answer, or the kind of transport error.
func failureReason(status int, err error) string {
	switch {
	case errors.Is(err, httpguard.ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, httpguard.ErrRateLimited): // the server paused or slowed the key
		return "rate_limited"
	case errors.Is(err, httpguard.ErrBodyTooLongToMap): // a Fallback sent nothing to a target with Models
		return "body_too_long"
	case errors.Is(err, httpguard.ErrModelUnreadable): // likewise, the body compressed or naming two models
		return "model_unreadable"
	case errors.Is(err, httpguard.ErrBodyHoldsCredentials): // a Fallback sent nothing to a target but the primary
		return "body_credentials"
	case errors.Is(err, httpguard.ErrRemappedBelowBudget): // a Fallback below a Budget sent nothing to a target of another model
		return "remapped_below_budget"
	case status != 0 && statusLabel(status) == 0:
		return "status_invalid"
	case status != 0:
		return "status_" + strconv.Itoa(status)
	}
	return errorType(err)
}

// statusLabel returns the http.response.status_code value of status: the
// status itself when a registry lists it (net/http's StatusText, from
// IANA's) or providers send it besides (see unlistedStatus), else 0.
// net/http's client takes any three digits an HTTP/1.1 server writes as
// its status (600 to 999 too, which RFC 9110, section 15, says no status
// is), and any integer an HTTP/2 server writes as its :status; labelled
// as they come, statuses a hostile or broken server makes up would add
// series by the hundred.
func statusLabel(status int) int {
	if http.StatusText(status) == "" && !unlistedStatus(status) {
		return 0
	}
	return status
}

// unlistedStatus reports whether status is one that AI providers, or the
// servers in front of them, send though no registry lists it:
// Anthropic's 529 (overloaded), which the Retrier retries; nginx's 499
// (the client closed the request); Cloudflare's 520 to 527 and 530 (its
// origin failed).
func unlistedStatus(status int) bool {
	return status == 499 || status >= 520 && status <= 527 || status == 529 || status == 530
}

// errorType sorts a transport error into timeout, canceled (the caller
// gave up: no fault of the connection) or connection.
func errorType(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, httpguard.ErrAttemptTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "connection"
}

// OnStateChange returns a BreakerConfig.OnStateChange hook that counts the
// state changes of each circuit, with the circuit's key (host and model by
// default; "_other" past the first 64 keys) and the states it left
// and entered. Its events name no request.
func (m *Metrics) OnStateChange(attrs ...attribute.KeyValue) func(httpguard.BreakerEvent) {
	if m.off() {
		return nil
	}
	return func(e httpguard.BreakerEvent) {
		m.stateChanges.Add(context.Background(), 1, attributes(context.Background(), attrs,
			keyCircuit.String(m.circuitLabel(e.Key)), keyFrom.String(e.From.String()), keyTo.String(e.To.String())))
	}
}

// circuitLabel returns the httpguard.circuit value of the circuit key:
// the key itself for the first maxCircuitLabels keys, otherCircuit after,
// so that model strings callers choose cannot add series without bound.
// Bytes of the key that are not UTF-8 read as U+FFFD: the model in a key
// is the caller's bytes, and OTLP's protobuf strings (and Prometheus's
// labels) must be UTF-8, or the whole export fails.
func (m *Metrics) circuitLabel(key string) string {
	key = strings.ToValidUTF8(key, "\uFFFD")
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.circuits[key]; ok {
		return key
	}
	if len(m.circuits) >= maxCircuitLabels {
		return otherCircuit
	}
	m.circuits[key] = struct{}{}
	return key
}

// OnSwitch returns a FallbackConfig.OnSwitch hook that counts the requests
// moved from one target to the next, by the targets' names and why the
// request left: circuit_open, rate_limited, status_503 (and the like),
// timeout, connection, body_too_long (a body longer than
// MaxBufferedBody, sent to no target with Models), model_unreadable (a
// body whose model cannot be read, likewise: compressed, or naming two) or
// body_credentials (a body holding the caller's credentials, or one that
// cannot be read for them, sent to no target but the primary) or
// remapped_below_budget (a Fallback placed below a Budget sent nothing to
// a target that would run another model than the one the Budget priced).
func (m *Metrics) OnSwitch(attrs ...attribute.KeyValue) func(httpguard.FallbackEvent) {
	if m.off() {
		return nil
	}
	return func(e httpguard.FallbackEvent) {
		ctx := context.Background()
		if e.Request != nil {
			ctx = e.Request.Context()
		}
		m.switches.Add(context.Background(), 1, attributes(ctx, attrs,
			keyFrom.String(e.From), keyTo.String(e.To), keyReason.String(failureReason(e.StatusCode, e.Err))))
	}
}

// OnThrottle returns a LimitConfig.OnThrottle hook that records the
// Limiter's waits and rejections, and the server's pauses and rate
// decreases it follows. Its events name no request: give a per-tenant
// Limiter its tenant here.
func (m *Metrics) OnThrottle(attrs ...attribute.KeyValue) func(httpguard.ThrottleEvent) {
	if m.off() {
		return nil
	}
	return func(e httpguard.ThrottleEvent) {
		reason := keyReason.String(string(e.Reason))
		switch e.Reason {
		case httpguard.ThrottleServerPause, httpguard.ThrottleSlowDown:
			m.signals.Add(context.Background(), 1, attributes(context.Background(), attrs, reason))
		default:
			m.wait.Record(context.Background(), e.Wait.Seconds(), attributes(context.Background(), attrs, reason, keyRejected.Bool(e.Rejected)))
		}
	}
}

// OnSettle returns a BudgetConfig.OnSettle hook that counts the money and
// tokens each attempt was charged, by model: the price table's entry that
// priced it (Settlement.PricedAs), so that a caller naming models the
// table does not list adds one series ("*"), not one per name. Every
// Budget of a stack charges each attempt (a tenant's and a global one
// both do): give this hook to one of them, or each its own attrs, or the
// attempt is counted once for each.
func (m *Metrics) OnSettle(attrs ...attribute.KeyValue) func(httpguard.Settlement) {
	if m.off() {
		return nil
	}
	return func(s httpguard.Settlement) {
		ctx := context.Background()
		if s.Request != nil {
			ctx = s.Request.Context()
		}
		priced := s.PricedAs
		if priced == "" { // a Settlement made by hand
			priced = s.Model
		}
		model := keyModel.String(priced)
		m.spend.Add(context.Background(), dollars(s.Charged), attributes(ctx, attrs, model))
		if s.UsageKnown {
			m.tokens.Add(context.Background(), s.Usage.InputTokens, attributes(ctx, attrs, model, keyToken.String("input")))
			m.tokens.Add(context.Background(), s.Usage.OutputTokens, attributes(ctx, attrs, model, keyToken.String("output")))
		}
	}
}

// ObserveBudget reports what b has left in its window (Limit minus the
// money settled and held, not below zero) on httpguard.budget.remaining,
// with attrs, at each collection until stop is called. With a shared store
// each collection reads the store; a collection whose read fails records
// no point for b, rather than a 0 that would read as a spent budget. A nil
// b, a Budget left unconfigured (which Chain skips), is not observed.
// Give each Budget observed attrs of its own (a tenant, a service): two
// observed with the same attrs make one series, whose point is either's.
func (m *Metrics) ObserveBudget(b *httpguard.Budget, attrs ...attribute.KeyValue) (stop func()) {
	if b == nil || m.off() {
		return func() {}
	}
	o := &observedBudget{b: b, attrs: attributes(context.Background(), attrs)}
	m.mu.Lock()
	m.budgets[o] = struct{}{}
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.budgets, o)
		m.mu.Unlock()
	}
}

func (m *Metrics) observeRemaining(ctx context.Context, obs metric.Float64Observer) error {
	m.mu.Lock()
	budgets := make([]*observedBudget, 0, len(m.budgets))
	for o := range m.budgets {
		budgets = append(budgets, o)
	}
	m.mu.Unlock()
	for _, o := range budgets {
		settled, held, err := o.b.Totals(ctx)
		if err != nil {
			continue // the Budget logged it
		}
		obs.Observe(dollars(max(0, o.b.Limit()-settled-held)), o.attrs)
	}
	return nil
}

// dollars converts money to float64 dollars.
func dollars(m httpguard.Money) float64 { return float64(m) / float64(httpguard.Dollar) }
