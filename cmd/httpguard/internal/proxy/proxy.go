// Package proxy is the gateway behind `httpguard proxy`: an HTTP handler,
// in the style of net/http/httputil.ReverseProxy, that forwards AI API
// requests to configured upstreams through httpguard's stack (Fallback,
// Retrier, Breaker, Budget, Limiter), swaps tenants' virtual keys for the
// real provider key, answers refusals in the provider's error format, logs
// each request and serves metrics.
package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/otelguard"
	"github.com/holysheep/httpguard/redisguard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Defaults of the zero fields of Config.
const (
	DefaultMaxRequestBytes   = httpguard.DefaultMaxBufferedBody // what a Budget can price
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultBodyReadTimeout   = 30 * time.Second
	DefaultWriteStallTimeout = 60 * time.Second // nginx's send_timeout
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultShutdownGrace     = 30 * time.Second
)

// globalBudget names the proxy-wide budget in refusals, metrics and Redis;
// no tenant may take the name.
const globalBudget = "proxy"

// RetrySpec is the Retrier's policy: DefaultRetryPolicy with these fields
// changed, and a jitter of half BaseDelay, at most 500ms.
type RetrySpec struct {
	MaxRetries          int
	BaseDelay, MaxDelay time.Duration
	// AttemptTimeout bounds how long an attempt waits for the upstream's
	// response headers before it is given up (and retried, if retries
	// remain); a stream is never cut once its headers came. Zero means no
	// bound: a non-streaming answer's headers come only once the model has
	// written it all, which can take minutes.
	AttemptTimeout time.Duration
}

// Config is what a Proxy runs with; New copies it. Upstreams is required;
// every other field's zero value is a documented default.
type Config struct {
	// Upstreams are where requests go, by path prefix (the longest match
	// wins). Required.
	Upstreams []Upstream
	// Prices price models for the budgets. Required when a budget is set.
	Prices httpguard.PriceTable
	// ToolPrices are the fees per call of the tools providers run on their
	// side (web search, code execution), by tool type, as
	// httpguard.BudgetConfig.ToolPrices reads them. Where a budget applies,
	// a request declaring such a tool without a fee here is refused
	// (server_tool_not_metered).
	ToolPrices map[string]httpguard.Money
	// ToolCallReserve and ToolResultReserve are the budgets'
	// httpguard.BudgetConfig.ToolCallReserve (calls reserved for a server
	// tool a request does not bound) and ToolResultReserve (input tokens
	// reserved for what one call returns to the model); 0 means the
	// library's defaults.
	ToolCallReserve, ToolResultReserve int64
	// Budget caps the spend of all requests together; nil means no
	// proxy-wide cap.
	Budget *BudgetSpec
	// Limits pace all requests together, per upstream host and model: the
	// provider's limits on the real key. Zero means none.
	Limits LimitSpec
	// Retry is the retry policy, one Retrier (and retry budget) per
	// upstream. The zero RetrySpec makes no retries.
	Retry RetrySpec
	// Tenants are the clients known by a virtual key, each with its own
	// budget, limits and models. None means the client's own key passes
	// through to the upstream unchanged.
	Tenants []Tenant
	// Redis, when set, holds the budgets and the limiters' buckets, so
	// that every proxy of a fleet sharing it shares their caps and rates.
	Redis redis.UniversalClient

	// MaxRequestBytes bounds a request body; a longer one is answered 413.
	// Zero means DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// BodyReadTimeout bounds the reading of a request body. Zero means
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// WriteStallTimeout bounds each write of an answer to a client: one
	// that stops reading is cut once a write has waited this long, and its
	// attempt settles, rather than holding the upstream's connection, a
	// goroutine and the budgets' reservations for as long as its own
	// connection stays open. A stream that sends nothing for a while is
	// not cut. Zero means DefaultWriteStallTimeout.
	WriteStallTimeout time.Duration
	// MaxHeaderBytes, ReadHeaderTimeout and IdleTimeout are the
	// http.Server's (see Serve). Zero means the Default constants.
	MaxHeaderBytes    int
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// ShutdownGrace is how long Serve lets requests and streams in flight
	// finish once its context ends (Cut ends it early). Zero means
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration

	// Transport sends the attempts; nil means NewTransport().
	Transport http.RoundTripper
	// Logger receives the access log, one record per request, and what
	// the stores report. Nil means silent.
	Logger *slog.Logger
	// Getenv reads the upstreams' keys; nil means os.Getenv.
	Getenv func(string) string
}

// Proxy is an http.Handler that forwards requests to the configured
// upstreams through httpguard's stack. Make one with New and Close it when
// done; it is safe for concurrent use.
type Proxy struct {
	cfg     Config
	routes  []*route  // longest prefix first
	tenants []*tenant // with keys; or one anonymous tenant, passing keys through
	keyed   bool      // tenants have keys: swap them

	budget   *httpguard.Budget // proxy-wide; nil: none
	limiter  *httpguard.Limiter
	breakers map[BreakerSpec]*httpguard.Breaker // one per distinct spec, shared by the routes
	metrics  *otelguard.Metrics
	meters   *sdkmetric.MeterProvider
	scrape   http.Handler
	log      *slog.Logger

	closers  []func() error
	draining atomic.Bool
	cut      chan struct{} // closed by Cut
	cutOnce  sync.Once
	buffers  bufferPool
	keys     []string // the real keys of the upstreams and fallbacks, and the credentials in their headers
	redact   redactor // masks keys in answers and the access log
	self     string   // the name the proxy gives itself in Via, its own (see loopsBack)
}

type route struct {
	Upstream
	index int
	key   string // the real key, with tenants
	// credentialed: its headers carry a credential (a gateway's key),
	// which clients without tenants do not hold.
	credentialed bool
	retrier      *httpguard.Retrier
	breaker      *httpguard.Breaker
	fallback     *httpguard.Fallback // nil: no fallbacks
	// shownAs names the targets of the fallback to tenants, in
	// TargetHeader, by their names in it: the upstream as "upstream", a
	// fallback by its configured name or as "fallback-N", never by a host.
	shownAs map[string]string
}

type tenant struct {
	Tenant
	budget  *httpguard.Budget
	limiter *httpguard.Limiter
	charger string                   // the innermost budget of its stack; "" none
	proxies []*httputil.ReverseProxy // by route index
}

// NewTransport returns the transport a Proxy sends attempts with by
// default: http.DefaultTransport's settings, with room for many idle
// connections per upstream, as a gateway needs.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}

// New validates c and builds the stacks: one Retrier per upstream, the
// proxy-wide Budget and Limiter, and each tenant's. Errors name what is
// wrong.
func New(c Config) (*Proxy, error) {
	c = c.withDefaults()
	p := &Proxy{cfg: c, log: c.Logger, keyed: len(c.Tenants) > 0, breakers: map[BreakerSpec]*httpguard.Breaker{}, cut: make(chan struct{}),
		self: "httpguard-" + rand.Text()[:16]}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if err := p.build(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (c Config) withDefaults() Config {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if c.WriteStallTimeout == 0 {
		c.WriteStallTimeout = DefaultWriteStallTimeout
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Transport == nil {
		c.Transport = NewTransport()
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	return c
}

func (p *Proxy) build() error {
	c := &p.cfg
	if len(c.Upstreams) == 0 {
		return errors.New("no upstream: set --upstream or the config file's upstreams")
	}
	if err := p.buildMetrics(); err != nil {
		return err
	}
	for i, u := range c.Upstreams {
		r, err := p.newRoute(i, u)
		if err != nil {
			return err
		}
		p.routes = append(p.routes, r)
	}
	slices.SortStableFunc(p.routes, func(a, b *route) int { return len(b.Prefix) - len(a.Prefix) })

	var err error
	if c.Budget != nil {
		if p.budget, err = p.newBudget(globalBudget, *c.Budget); err != nil {
			return err
		}
	}
	if p.limiter, err = p.newLimiter(globalBudget, c.Limits, attribute.String("limits", globalBudget), ""); err != nil {
		return err
	}
	tenants := c.Tenants
	if !p.keyed {
		tenants = []Tenant{{}} // anonymous: keys pass through
	}
	for _, tc := range tenants {
		t, err := p.newTenant(tc)
		if err != nil {
			return err
		}
		p.tenants = append(p.tenants, t)
	}
	p.redact = newRedactor(p.keys)
	p.warnUnguarded()
	p.warnUnreadPrices()
	p.warnUnpricedModels()
	p.warnUnusedRedis()
	return nil
}

// warnUnpricedModels logs, at start, each tenant with a budget whose
// models list models no price covers (no entry, no "*"): every request
// for one is refused, model_not_priced. A model served free (OpenAI's
// moderation models), which budgets pass unpriced, is not named.
func (p *Proxy) warnUnpricedModels() {
	for _, t := range p.tenants {
		if t.charger == "" {
			continue
		}
		var unpriced []string
		for _, m := range t.Models {
			if !p.priced(m) && !servedFree(p.cfg.Prices, m) {
				unpriced = append(unpriced, m)
			}
		}
		if len(unpriced) > 0 {
			p.log.Warn(`httpguard proxy: a tenant may use models no price covers, and has a budget: every request for them is refused (model_not_priced); price them, or add a "*" entry`,
				"tenant", t.Name, "models", strings.Join(unpriced, ", "))
		}
	}
}

// servedFree reports whether a budget on prices lets a moderation of
// model pass unpriced, as OpenAI serves some free: asked of httpguard,
// whose rule it is, with a budget of its own and a request that goes
// nowhere.
func servedFree(prices httpguard.PriceTable, model string) bool {
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Cent, Prices: prices})
	if err != nil {
		return false
	}
	body, err := json.Marshal(map[string]string{"model": model})
	if err != nil {
		return false
	}
	req, err := http.NewRequest(http.MethodPost, "http://moderations.invalid/v1/moderations", bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	passed := false
	resp, err := b.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) {
		passed = true
		return nil, errors.New("not sent")
	})).RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return passed
}

// warnUnusedRedis logs, at start, a Redis that holds nothing: it holds
// the budgets and the limiters' buckets, and there are none.
func (p *Proxy) warnUnusedRedis() {
	if p.cfg.Redis == nil || p.budget != nil || p.limiter != nil ||
		slices.ContainsFunc(p.tenants, func(t *tenant) bool { return t.budget != nil || t.limiter != nil }) {
		return
	}
	p.log.Warn("httpguard proxy: Redis holds budgets and rate limits, and there are none: it is not used " +
		"(set --budget, --rps or --tpm, or a tenant's budget or limits, for the proxies of a fleet to share)")
}

// warnUnreadPrices logs, at start, prices that no budget reads: without
// one they price nothing, and no spend is counted, in the access log or
// the metrics.
func (p *Proxy) warnUnreadPrices() {
	c := &p.cfg
	if len(c.Prices) == 0 && len(c.ToolPrices) == 0 && c.ToolCallReserve == 0 && c.ToolResultReserve == 0 {
		return
	}
	if p.budget != nil || slices.ContainsFunc(p.tenants, func(t *tenant) bool { return t.budget != nil }) {
		return
	}
	p.log.Warn("httpguard proxy: prices are read by budgets only (prices, tool_prices, tool_call_reserve, tool_result_reserve): " +
		"without --budget or a tenant's budget they price nothing, and no spend is counted")
}

// Unguarded returns, in prefix order, the upstreams whose headers hold a
// credential (a gateway's key, such as x-portkey-api-key) that the proxy
// sends for every client because it has no tenants: whoever reaches the
// proxy spends on it, without a key of their own.
func (p *Proxy) Unguarded() []string {
	var out []string
	for _, r := range p.routes {
		if !p.keyed && r.credentialed {
			out = append(out, r.Prefix)
		}
	}
	slices.Sort(out)
	return out
}

// warnUnguarded logs, at start, what the configuration lets any client
// spend, and the key_env lines it does not read without tenants.
func (p *Proxy) warnUnguarded() {
	for _, prefix := range p.Unguarded() {
		p.log.Warn("httpguard proxy: an upstream's headers hold a credential and there are no tenants: any client that reaches the proxy spends on it; "+
			"add tenants (one is enough), or keep the proxy on a loopback address", "upstream", prefix)
	}
	if p.keyed {
		return
	}
	for _, r := range p.routes {
		switch {
		case r.KeyEnv == "":
		case r.pos != "":
			p.log.Warn("httpguard proxy: key_env is read with tenants only: without them each client's own key passes through to the upstream",
				"upstream", r.Prefix, "at", r.pos)
		case p.cfg.Getenv(r.KeyEnv) != "":
			// --upstream always names a variable (--upstream-key-env's):
			// only a key in it, unread, is a setting ignored.
			p.log.Warn("httpguard proxy: the upstream's key in the variable --upstream-key-env names is read with tenants only: without them each client's own key passes through to the upstream",
				"upstream", r.Prefix, "variable", envShown(r.KeyEnv, false))
		}
	}
}

// newRoute checks upstream i and makes its route: its Retrier, Breaker
// and Fallback.
func (p *Proxy) newRoute(i int, u Upstream) (*route, error) {
	c := &p.cfg
	if err := checkPrefix(u.Prefix); err != nil {
		return nil, fmt.Errorf("upstream %d: prefix: %w", i+1, err)
	}
	if u.URL == nil {
		return nil, fmt.Errorf("upstream %s: no URL", u.Prefix)
	}
	if u.API == "" {
		u.API = OpenAI
	}
	for _, r := range p.routes {
		if r.Prefix == u.Prefix {
			return nil, fmt.Errorf("two upstreams have the prefix %s", u.Prefix)
		}
	}
	r := &route{Upstream: u, index: i}
	if p.keyed {
		if u.KeyEnv == "" {
			return nil, fmt.Errorf("%supstream %s: with tenants, key_env must name the environment variable holding its real key", at(u.pos), u.Prefix)
		}
		// An upstream from a config file names its variable in key_env; one
		// made otherwise (the command's --upstream) has no such line.
		what := " (key_env)"
		if u.pos == "" {
			what = ", holding its real key for the tenants,"
		}
		if r.key = c.Getenv(u.KeyEnv); r.key == "" {
			return nil, fmt.Errorf("%supstream %s: the environment variable %s%s is empty or unset", at(u.pos), u.Prefix, envShown(u.KeyEnv, false), what)
		}
		if !isKey(r.key) {
			return nil, fmt.Errorf("%supstream %s: the environment variable %s%s %s", at(u.pos), u.Prefix, envShown(u.KeyEnv, false), what, notAKey)
		}
		p.keys = append(p.keys, r.key)
	}
	p.addHeaderSecrets(u.Header)
	r.credentialed = holdsCredential(u.Header)
	var err error
	if r.breaker, err = p.breaker(r); err != nil {
		return nil, err
	}
	if r.fallback, err = p.newFallback(r); err != nil {
		return nil, err
	}
	policy := httpguard.DefaultRetryPolicy()
	policy.MaxRetries, policy.BaseDelay, policy.MaxDelay = c.Retry.MaxRetries, c.Retry.BaseDelay, c.Retry.MaxDelay
	policy.AttemptTimeout = c.Retry.AttemptTimeout
	policy.Jitter = min(policy.Jitter, c.Retry.BaseDelay/2)
	policy.OnRetry = p.onRetry(p.metrics.OnRetry(attribute.String("upstream", u.Prefix)))
	r.retrier, err = httpguard.NewRetrier(policy)
	return r, err
}

// addHeaderSecrets adds to the keys the redactor masks the credentials in
// h, an upstream's or a fallback's headers: a gateway's own key, which
// only headers can set (Portkey's x-portkey-api-key, Helicone's
// Helicone-Auth, Cloudflare AI Gateway's cf-aig-authorization, Azure API
// Management's Ocp-Apim-Subscription-Key), is the operator's secret as
// much as a key from key_env, with or without tenants. Each word of such
// a header's value is one ("Bearer sk-…" masks as "Bearer ****"), and so,
// in a value that is JSON (Portkey's x-portkey-config holding a config
// inline), each word of a field named as credentials are: its api_key, a
// provider's aws_secret_access_key, a service account's private_key.
func (p *Proxy) addHeaderSecrets(h http.Header) {
	add := func(word string) { p.keys = append(p.keys, word) }
	for name, vs := range h {
		for _, v := range vs {
			if credentialHeader(name) {
				secretWords(v, add)
			}
			jsonSecrets(v, false, add)
		}
	}
}

// holdsCredential reports whether h, an upstream's headers, holds a
// credential: a header whose name is a credential's once "portkey" is left
// out of it (every x-portkey-* name holds "key"), such as
// x-portkey-api-key or Helicone-Auth, or a JSON value with a field so
// named (an inline x-portkey-config's api_key).
func holdsCredential(h http.Header) bool {
	found := false
	for name, vs := range h {
		for _, v := range vs {
			if v != "" && credentialHeader(strings.ReplaceAll(strings.ToLower(name), "portkey", "")) {
				return true
			}
			jsonSecrets(v, false, func(string) { found = true })
		}
	}
	return found
}

// secretWords calls add with each word of v that could be a key.
func secretWords(v string, add func(word string)) {
	for word := range strings.FieldsSeq(v) {
		if isKey(word) {
			add(word)
		}
	}
}

// jsonSecrets calls add, when v is a JSON object or array, with the words
// of the strings in it under a name credentialHeader matches (all of them
// when secret is set: the value of such a field), a string that is JSON
// itself (a service account's JSON) read likewise.
func jsonSecrets(v string, secret bool, add func(word string)) {
	var doc any
	if s := strings.TrimSpace(v); s == "" || s[0] != '{' && s[0] != '[' || json.Unmarshal([]byte(s), &doc) != nil {
		if secret {
			secretWords(v, add)
		}
		return
	}
	var walk func(any, bool)
	walk = func(x any, secret bool) {
		switch x := x.(type) {
		case map[string]any:
			for k, e := range x {
				walk(e, secret || credentialHeader(k))
			}
		case []any:
			for _, e := range x {
				walk(e, secret)
			}
		case string:
			jsonSecrets(x, secret, add)
		}
	}
	walk(doc, secret)
}

// credentialHeader reports whether a header named name may carry a
// credential, as httpguard.Fallback judges the headers it keeps from
// other targets: its name contains auth, key, token, secret, password,
// signature or credential, in any case, or it is Cookie.
func credentialHeader(name string) bool {
	name = strings.ToLower(name)
	if name == "cookie" {
		return true
	}
	for _, part := range [...]string{"auth", "key", "token", "secret", "password", "signature", "credential"} {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// at is pos as the start of an error message: "proxy.yaml:3: ", or "".
func at(pos string) string {
	if pos == "" {
		return ""
	}
	return pos + ": "
}

// neverOpens is the Breaker of an upstream without fallbacks or a breaker
// block: its circuits never open (with nowhere else to send a request, an
// open circuit would refuse requests a degraded provider still serves),
// and it checks that chat streams end with their terminal event.
var neverOpens = BreakerSpec{ConsecutiveFailures: -1, MinCalls: math.MaxInt}

// breaker returns the Breaker of route r: one per distinct spec, so that
// every route sending to a host and model with the same settings shares
// its circuit, whichever tenant sends.
func (p *Proxy) breaker(r *route) (*httpguard.Breaker, error) {
	spec := neverOpens
	switch {
	case r.Breaker != nil:
		spec = *r.Breaker
	case len(r.Fallbacks) > 0:
		spec = BreakerSpec{} // the library's defaults
	}
	if b := p.breakers[spec]; b != nil {
		return b, nil
	}
	bc := spec.config()
	bc.MaxBufferedBody, bc.Logger, bc.OnStateChange = p.cfg.MaxRequestBytes, p.cfg.Logger, p.metrics.OnStateChange()
	b, err := httpguard.NewBreaker(bc)
	if err != nil {
		return nil, fmt.Errorf("%supstream %s: %w", at(r.pos), r.Prefix, err)
	}
	p.breakers[spec] = b
	return b, nil
}

// newFallback makes the Fallback of route r, nil when it has no fallbacks:
// Targets[0] is the upstream, its key already set by the rewrite; each
// fallback has its key from the environment, set as r's API takes it.
func (p *Proxy) newFallback(r *route) (*httpguard.Fallback, error) {
	if len(r.Fallbacks) == 0 {
		return nil, nil
	}
	if !p.keyed {
		return nil, fmt.Errorf("%supstream %s: fallbacks need tenants: without virtual keys, anyone who reaches the proxy could spend a fallback's key whenever the upstream is down",
			at(r.Fallbacks[0].pos), r.Prefix)
	}
	targets := []httpguard.Target{{Name: r.URL.Host, BaseURL: r.URL.String()}}
	r.shownAs = map[string]string{r.URL.Host: "upstream"}
	for i, f := range r.Fallbacks {
		r.shownAs[f.name()] = cmp.Or(f.Name, fmt.Sprintf("fallback-%d", i+1))
		if f.URL == nil {
			return nil, fmt.Errorf("%s: no URL", f.where(r, f.pos))
		}
		key := p.cfg.Getenv(f.KeyEnv)
		if f.KeyEnv == "" || key == "" {
			return nil, fmt.Errorf("%s: the environment variable %s (key_env) is empty or unset", f.where(r, f.pos), envShown(f.KeyEnv, true))
		}
		if !isKey(key) {
			return nil, fmt.Errorf("%s: the environment variable %s (key_env) %s", f.where(r, f.pos), envShown(f.KeyEnv, true), notAKey)
		}
		p.keys = append(p.keys, key)
		p.addHeaderSecrets(f.Header)
		if err := p.checkPriced(r, &f); err != nil {
			return nil, err
		}
		h := f.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		if r.API == Anthropic {
			h.Set("X-Api-Key", key)
		} else {
			h.Set("Authorization", "Bearer "+key)
		}
		targets = append(targets, httpguard.Target{Name: f.name(), BaseURL: f.URL.String(), Header: h, Models: f.Models})
	}
	fb, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: targets, MaxBufferedBody: p.cfg.MaxRequestBytes,
		OnSwitch: p.onSwitch(p.metrics.OnSwitch(attribute.String("upstream", r.Prefix)))})
	if err != nil {
		return nil, fmt.Errorf("%supstream %s: %w", at(r.pos), r.Prefix, err)
	}
	return fb, nil
}

// checkPriced refuses a fallback whose models a budget could not price.
// The models requests name are checked as they come; those a fallback
// asks for instead must be priced before any request needs them.
func (p *Proxy) checkPriced(r *route, f *Fallback) error {
	c := &p.cfg
	if c.Budget == nil && !slices.ContainsFunc(c.Tenants, func(t Tenant) bool { return t.Budget != nil }) {
		return nil
	}
	for _, from := range slices.Sorted(maps.Keys(f.Models)) {
		if to := f.Models[from]; !p.priced(to) {
			pos := f.modelsPos[from]
			if pos == "" {
				pos = f.pos
			}
			return fmt.Errorf("%s: model %q (asked for instead of %q) has no price, and the prices have no %q entry: a budget could not price what is sent to it",
				f.where(r, pos), to, from, httpguard.FallbackModel)
		}
	}
	return nil
}

// where names fallback f of route r in errors, at pos in the config file
// (or by the route's prefix when it comes from none).
func (f *Fallback) where(r *route, pos string) string {
	if pos != "" {
		return fmt.Sprintf("%s: fallback %q", pos, f.name())
	}
	return fmt.Sprintf("upstream %s: fallback %q", r.Prefix, f.name())
}

func (p *Proxy) newTenant(tc Tenant) (*tenant, error) {
	t := &tenant{Tenant: tc}
	if p.budget != nil {
		t.charger = globalBudget
	}
	if p.keyed {
		if tc.Name == "" || tc.Name == globalBudget {
			return nil, fmt.Errorf("a tenant may not be named %q", tc.Name)
		}
		var err error
		if tc.Budget != nil {
			if t.budget, err = p.newBudget(tc.Name, *tc.Budget); err != nil {
				return nil, err
			}
			t.charger = tc.Name
		}
		if t.limiter, err = p.newLimiter("tenant/"+tc.Name, tc.Limits, attribute.String("tenant", tc.Name), tc.Name); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.Name, err)
		}
	}
	t.proxies = make([]*httputil.ReverseProxy, len(p.routes))
	for _, r := range p.routes {
		t.proxies[r.index] = p.reverseProxy(r, t)
	}
	return t, nil
}

// newBudget makes a budget named name, in Redis when the proxy has it.
func (p *Proxy) newBudget(name string, spec BudgetSpec) (*httpguard.Budget, error) {
	if len(p.cfg.Prices) == 0 {
		return nil, fmt.Errorf("budget %q: a budget needs prices (--prices or the config file's prices)", name)
	}
	bc := httpguard.BudgetConfig{Limit: spec.Limit, Window: spec.Window, Period: spec.Period, Prices: p.cfg.Prices, ToolPrices: p.cfg.ToolPrices,
		ToolCallReserve: p.cfg.ToolCallReserve, ToolResultReserve: p.cfg.ToolResultReserve,
		Logger: p.cfg.Logger, OnSettle: p.onSettle(name), MaxBufferedBody: p.readBytes()}
	if p.cfg.Redis != nil {
		store, err := redisguard.NewBudgetStore(p.cfg.Redis, redisguard.BudgetStoreConfig{
			Name: budgetStoreName(name) + "/" + spec.window(), Logger: p.cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("budget %q: %w", name, err)
		}
		p.closers = append(p.closers, store.Close)
		bc.Store = store
	}
	b, err := httpguard.NewBudget(bc)
	if err != nil {
		return nil, fmt.Errorf("budget %q: %w", name, err)
	}
	stop := p.metrics.ObserveBudget(b, attribute.String("budget", name))
	p.closers = append(p.closers, func() error { stop(); return nil })
	return b, nil
}

// readBytes is how much of a request body the budgets and limiters read:
// MaxRequestBytes, which bounds what the client sends, and the member the
// outermost budget adds to a streaming request that did not ask for its
// usage, "stream_options":{"include_usage":true} and a comma, which the
// layers below it read with the body. Without it a stream within
// MaxRequestBytes was refused by a tenant's budget below the proxy's as
// too long to price. It saturates at the largest int64 rather than
// overflow.
func (p *Proxy) readBytes() int64 {
	const added = int64(len(`"stream_options":{"include_usage":true},`))
	return min(p.cfg.MaxRequestBytes, math.MaxInt64-added) + added
}

// budgetStoreName names a budget in Redis: "proxy", or "tenant/NAME".
func budgetStoreName(name string) string {
	if name == globalBudget {
		return name
	}
	return "tenant/" + name
}

// isKey reports whether key can be sent as it is in a header: no space
// and no control character (a key file read with its trailing newline, as
// Kubernetes secrets made --from-file are, has one).
func isKey(key string) bool {
	return !strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f })
}

// envShown is how errors name the environment variable name: as it is
// (quoted when quote is set) when it reads as a variable's name, upper-case
// letters, digits and _ ("HOLYSHEEP_API_KEY"), and otherwise not at all: a
// key pasted in place of its variable's name ("sk-proj-…", a Google
// "AIza…") would be printed with the error, on stderr and into logs.
func envShown(name string, quote bool) string {
	shown := name != "" && len(name) <= 64 && !strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
	})
	switch {
	case !shown:
		return "(its name not shown: it does not read as one, upper-case letters, digits and _; a key?)"
	case quote:
		return strconv.Quote(name)
	}
	return name
}

// notAKey ends the error of a key isKey refuses; it never quotes the key.
const notAKey = "holds a space or a control character (a trailing newline?)"

// newLimiter makes the limiter named name, in Redis when the proxy has it:
// tenant's, or with tenant "" the shared one.
func (p *Proxy) newLimiter(name string, l LimitSpec, who attribute.KeyValue, tenant string) (*httpguard.Limiter, error) {
	if !l.isSet() {
		return nil, nil
	}
	lc := l.config()
	if tenant != "" {
		// One bucket for all the tenant's requests: keyed by host and model,
		// as the provider counts, a tenant naming N models had N times its
		// limits. What the upstream says of its rates is the account's, for
		// the shared limits to follow, not the tenant's quota.
		key := "tenant " + tenant
		lc.Key = func(*http.Request, string) string { return key }
		lc.IgnoreServer = true
	}
	lc.OnThrottle, lc.MaxBufferedBody = p.metrics.OnThrottle(who), p.readBytes()
	if p.cfg.Redis != nil {
		store, err := redisguard.NewLimitStore(p.cfg.Redis, redisguard.LimitStoreConfig{Name: name, Logger: p.cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("limits %q: %w", name, err)
		}
		p.closers = append(p.closers, store.Close)
		lc.Store = store
	}
	return httpguard.NewLimiter(lc)
}

// reverseProxy is the ReverseProxy of tenant t to upstream r: the stack is
// its transport, Fallback → Retrier → Breaker → budgets → limiters, with
// the metrics' layers outermost and innermost, and keepStackHeaders
// next to the upstream.
func (p *Proxy) reverseProxy(r *route, t *tenant) *httputil.ReverseProxy {
	var layers []httpguard.Layer
	layers = append(layers, p.metrics.Requests())
	if r.fallback != nil {
		layers = append(layers, r.fallback)
	}
	layers = append(layers, r.retrier, r.breaker)
	if p.budget != nil {
		layers = append(layers, namedBudget(globalBudget, p.budget))
	}
	if t.budget != nil {
		layers = append(layers, namedBudget(t.Name, t.budget))
	}
	layers = append(layers, namedLimits(t.Name, t.limiter), namedLimits(globalBudget, p.limiter), p.metrics.Attempts(), httpguard.LayerFunc(countAttempts),
		httpguard.LayerFunc(keepStackHeaders))
	rp := &httputil.ReverseProxy{
		Rewrite:        p.rewrite(r),
		Transport:      httpguard.Chain(p.cfg.Transport, layers...),
		FlushInterval:  -1,
		BufferPool:     &p.buffers,
		ModifyResponse: answered(r, p.keyed, &p.redact),
		ErrorHandler:   p.errorHandler(r),
	}
	rp.ErrorLog = p.errorLog()
	return rp
}

// rewrite sends the request to r's upstream: its scheme and host, its path
// in place of r.Prefix, its key in place of a tenant's. Nothing of the
// client's URL host or Host header is kept.
func (p *Proxy) rewrite(r *route) func(*httputil.ProxyRequest) {
	return func(pr *httputil.ProxyRequest) {
		in := pr.In.URL
		pr.SetURL(r.URL)
		pr.Out.URL.Path = r.URL.Path + rest(in.Path, r.Prefix)
		pr.Out.URL.RawPath = ""
		if in.RawPath != "" {
			pr.Out.URL.RawPath = r.URL.EscapedPath() + rest(in.RawPath, r.Prefix)
		}
		// The transport then asks for gzip itself and decompresses, so
		// that the Budget can read the usage.
		pr.Out.Header.Del("Accept-Encoding")
		// The body is read whole already (net/http answered the client's
		// 100 Continue): an upstream asked to expect it would hold each
		// attempt's body until it answers 100 Continue, or for the
		// transport's ExpectContinueTimeout, a second, if it never does.
		pr.Out.Header.Del("Expect")
		// The method and path the handler checked are the ones the
		// upstream runs: a GET passes as read-only, a chat completion is
		// priced as one, and servers that honour these headers would run
		// the method or path they name instead.
		for _, h := range overrides {
			pr.Out.Header.Del(h)
		}
		if r.API == OpenAI && strings.HasSuffix(pr.Out.URL.Path, "/completions") {
			// A Budget asks OpenAI-style streams for their usage only
			// without this header (Anthropic's messages report it anyway);
			// OpenAI's completions endpoints do not read it, and a client
			// adding it would have its streams' usage go unseen.
			pr.Out.Header.Del("Anthropic-Version")
		}
		if p.keyed {
			dropKeys(pr.Out.Header)
			if r.API == Anthropic {
				pr.Out.Header.Set("X-Api-Key", r.key)
			} else {
				pr.Out.Header.Set("Authorization", "Bearer "+r.key)
			}
		} else if r.credentialed {
			dropGatewayRouting(pr.Out.Header)
		}
		for k, v := range r.Header { // after dropKeys: a gateway's routing may be the operator's
			pr.Out.Header[k] = slices.Clone(v)
		}
		// The proxy names itself, so that a request an upstream URL
		// leads back here is refused (see loopsBack). RFC 9110 (7.6.3)
		// names the protocol received without "HTTP/".
		pr.Out.Header.Add("Via", strings.TrimPrefix(pr.In.Proto, "HTTP/")+" "+p.self)
	}
}

// loopsBack reports whether a request names the proxy in its Via header:
// one of its upstream URLs led back to it, through a server that passes
// the header on (a load balancer, a Kubernetes Service, another reverse
// proxy, a name resolving to the proxy's own address, none of which the
// checks at start see). Sent on, it would come back again, without end,
// each time reserved anew. The name is the proxy's own, drawn at random
// when it is made: other httpguard proxies in front or behind are no
// loop.
func (p *Proxy) loopsBack(h http.Header) bool {
	for _, v := range h["Via"] {
		for hop := range strings.SplitSeq(v, ",") {
			// received-protocol SP received-by [ SP comment ]
			if f := strings.Fields(hop); len(f) >= 2 && f[1] == p.self {
				return true
			}
		}
	}
	return false
}

// overrides are the headers in which a client may ask a server to take a
// request for another method (Google's frontends, Express's
// method-override) or path (IIS's URL Rewrite, Symfony).
var overrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url"}

// rest is what follows prefix in path.
func rest(path, prefix string) string {
	if prefix == "/" {
		return path
	}
	return strings.TrimPrefix(path, prefix)
}

// matches reports whether prefix matches path on whole segments.
func matches(path, prefix string) bool {
	return prefix == "/" || path == prefix || strings.HasPrefix(path, prefix) && path[len(prefix)] == '/'
}

// Close releases the Redis stores and the metrics. The Redis client
// belongs to the caller.
func (p *Proxy) Close() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c())
	}
	p.closers = nil
	if p.meters != nil {
		errs = append(errs, p.meters.Shutdown(context.Background()))
	}
	if c, ok := p.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

func (p *Proxy) buildMetrics() error {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	p.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	if p.metrics, err = otelguard.New(p.meters); err != nil {
		return err
	}
	p.scrape = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return nil
}

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.pool.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }
