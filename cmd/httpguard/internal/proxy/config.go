package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holysheep/httpguard"
	"go.yaml.in/yaml/v3"
)

// An API is the wire format of an upstream: how it takes its key and how
// its errors look.
type API string

const (
	// OpenAI: Authorization: Bearer KEY; errors {"error":{"message","type","param","code"}}.
	OpenAI API = "openai"
	// Anthropic: x-api-key: KEY; errors {"type":"error","error":{"type","message"}}.
	Anthropic API = "anthropic"
)

// Upstream is where requests under a path prefix go.
type Upstream struct {
	// Prefix is the path prefix clients use, such as "/v1"; it matches on
	// whole segments. The longest matching prefix of all upstreams wins.
	Prefix string
	// URL is the upstream's base URL; its path takes the place of Prefix:
	// with Prefix "/v1" and URL https://api.holysheep.ai/v1,
	// /v1/chat/completions goes to https://api.holysheep.ai/v1/chat/completions.
	URL *url.URL
	// API is the upstream's wire format; empty means OpenAI.
	API API
	// KeyEnv names the environment variable holding the upstream's real
	// key, sent in place of a tenant's virtual key. Required with tenants.
	KeyEnv string
	// Header is set on every request sent to the upstream, replacing the
	// client's values: a gateway's routing, such as Portkey's
	// x-portkey-provider. It may not carry the upstream's key (KeyEnv's);
	// a gateway's own key (x-portkey-api-key, Helicone-Auth) is masked in
	// answers and the log as the real keys are.
	Header http.Header
	// Breaker is the circuit breaker of the upstream and its fallbacks.
	// nil means the library's defaults when there are fallbacks, and
	// otherwise a Breaker whose circuits never open, kept for its check
	// that chat streams end with their terminal event.
	Breaker *BreakerSpec
	// Fallbacks are where a request goes, in order, when the upstream
	// gives up on it (see httpguard.Fallback). They need tenants.
	Fallbacks []Fallback

	pos string // where the config file defines it ("proxy.yaml:3"), for errors
}

// BreakerSpec is an upstream's circuit breaker, as httpguard.BreakerConfig
// says; zero fields mean the library's defaults. A negative
// ConsecutiveFailures or MinCalls turns that rule off.
type BreakerSpec struct {
	ConsecutiveFailures      int
	FailureRatio             float64
	MinCalls                 int
	RatioWindow, CoolDown    time.Duration
	Probes                   int
	AllowUnterminatedStreams bool
}

// config returns the BreakerConfig of b.
func (b BreakerSpec) config() httpguard.BreakerConfig {
	return httpguard.BreakerConfig{ConsecutiveFailures: b.ConsecutiveFailures, FailureRatio: b.FailureRatio,
		MinCalls: b.MinCalls, RatioWindow: b.RatioWindow, CoolDown: b.CoolDown, Probes: b.Probes,
		AllowUnterminatedStreams: b.AllowUnterminatedStreams}
}

// Fallback is a provider an upstream's requests go to when it gives up:
// one that speaks the upstream's API, reached with a key of its own.
type Fallback struct {
	// Name names it in the X-Httpguard-Target header, the access log and
	// metrics. Empty means URL's host.
	Name string
	// URL is its base URL, checked as an upstream's: a request's path
	// below the upstream's URL goes below this one.
	URL *url.URL
	// KeyEnv names the environment variable holding its key, sent as the
	// upstream's API takes a key (Authorization: Bearer, or x-api-key).
	// Required: the key is never in the config file.
	KeyEnv string
	// Header is set on every request sent to it. It may not carry its key
	// (KeyEnv's); a gateway's own key is masked as Upstream.Header's.
	Header http.Header
	// Models maps the model a request names to the one to ask this
	// provider for; a model not in the map is asked for unchanged.
	Models map[string]string

	pos       string            // where the config file defines it
	modelsPos map[string]string // where it maps each model, by the model mapped
}

// BudgetSpec is one spend cap: Limit per Window (fixed windows) or per
// Period (calendar days or months, UTC); neither means one window for the
// life of the process (or of the Redis store).
type BudgetSpec struct {
	Limit  httpguard.Money
	Window time.Duration
	Period httpguard.Period
}

// window names the budget's window, for a Redis store's name.
func (b BudgetSpec) window() string {
	switch {
	case b.Period == httpguard.Daily:
		return "daily"
	case b.Period == httpguard.Monthly:
		return "monthly"
	case b.Window > 0:
		return b.Window.String()
	}
	return "lifetime"
}

// LimitSpec is a rate limit: RPS requests per second with a burst of Burst
// (0: RPS rounded up), and TPM model tokens per minute; zeros mean no
// limit. MaxWait is how long a request may wait for its turn before it is
// refused with a 429, as LimitConfig.MaxWait: 0 means
// httpguard.DefaultMaxWait, negative means never wait.
type LimitSpec struct {
	RPS     float64
	Burst   int
	TPM     int
	MaxWait time.Duration
}

func (l LimitSpec) isSet() bool { return l.RPS > 0 || l.TPM > 0 }

// Check reports what in l the Limiter would refuse, and a burst that
// limits nothing: a burst counts requests, which only RPS paces. The
// config file's limits and the command's flags share it.
func (l LimitSpec) Check() error {
	if l.Burst > 0 && !(l.RPS > 0) {
		return errors.New("burst without rps limits nothing: a burst counts requests, at the rps rate")
	}
	if _, err := httpguard.NewLimiter(l.config()); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "httpguard: limiter: "))
	}
	return nil
}

// config returns the LimitConfig of l.
func (l LimitSpec) config() httpguard.LimitConfig {
	c := httpguard.LimitConfig{RequestsPerSecond: l.RPS, Burst: l.Burst, TokensPerMinute: l.TPM, MaxWait: l.MaxWait}
	if l.RPS > 0 && c.Burst == 0 {
		// A rate too large for an int limits nothing: its burst must not
		// overflow into a negative one the Limiter refuses.
		c.Burst = int(min(math.Ceil(l.RPS), math.MaxInt32))
	}
	return c
}

// Tenant is a client of the proxy known by its virtual key.
type Tenant struct {
	Name string
	// KeySHA256 is the SHA-256 of the tenant's virtual key.
	KeySHA256 [sha256.Size]byte
	// Budget, when set, caps the tenant's spend.
	Budget *BudgetSpec
	// Limits pace the tenant's requests, all together whatever their
	// upstream and model; what the upstream says of its rates (429s,
	// x-ratelimit-*) is the shared Config.Limits' to follow.
	Limits LimitSpec
	// Models are the models the tenant may use, in "model", named in the
	// path (an Azure deployment or an engine), as fallbacks and in tools
	// that run a model (which must name one); empty means any.
	Models []string
}

// File is what a config file says.
type File struct {
	Upstreams  []Upstream
	Prices     httpguard.PriceTable
	ToolPrices map[string]httpguard.Money
	// ToolCallReserve and ToolResultReserve are tool_call_reserve and
	// tool_result_reserve; 0 when the file does not set them.
	ToolCallReserve, ToolResultReserve int64
	Tenants                            []Tenant
}

// ParseFile reads a YAML config file; name is used in errors, which name
// the line at fault.
//
//	upstreams:
//	  - prefix: /v1
//	    url: https://api.holysheep.ai/v1
//	    key_env: HOLYSHEEP_API_KEY
//	  - prefix: /v1/messages
//	    url: https://api.anthropic.com/v1/messages
//	    api: anthropic
//	    key_env: ANTHROPIC_API_KEY
//	    breaker: {consecutive_failures: 5, cool_down: 30s}
//	    fallbacks:
//	      - name: openrouter
//	        base_url: https://openrouter.ai/api/v1/messages
//	        key_env: OPENROUTER_API_KEY
//	        models: {claude-sonnet-4-5: anthropic/claude-sonnet-4.5}
//	prices:
//	  deepseek-v3.2: {input: 0.28, cached_input: 0.028, output: 0.42}
//	tool_prices: {web_search: 0.01}
//	tool_call_reserve: 5       # calls reserved for a tool without max_uses
//	tool_result_reserve: 8000  # input tokens reserved for what a call returns
//	tenants:
//	  - name: search
//	    key_sha256: <hex SHA-256 of the virtual key>
//	    budget: {limit: 20, period: daily}
//	    limits: {rps: 5, burst: 10, tpm: 200000, max_wait: 10s}
//	    models: [deepseek-v3.2]
func ParseFile(r io.Reader, name string) (File, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(r)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return File{}, nil
		}
		return File{}, fmt.Errorf("%s: %w", name, err)
	}
	// A second document (after ---) would be ignored, tenants and all.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return File{}, fmt.Errorf("%s: %w", name, err)
		}
		return File{}, fmt.Errorf("%s:%d: a second YAML document: keep the whole config in one", name, more.Line)
	}
	if len(doc.Content) == 0 {
		return File{}, nil
	}
	p := parser{file: name}
	f := p.document(doc.Content[0])
	return f, p.err
}

// parser walks a YAML document; the first error sticks and names its line.
type parser struct {
	file string
	err  error
}

func (p *parser) fail(n *yaml.Node, format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("%s: %s", p.at(n), fmt.Sprintf(format, args...))
	}
}

// at names where n is: "proxy.yaml:12".
func (p *parser) at(n *yaml.Node) string { return p.file + ":" + strconv.Itoa(n.Line) }

// fields returns the mapping n as key → value, failing on keys not in
// allowed (a typo must not pass silently) and on repeated keys.
func (p *parser) fields(n *yaml.Node, what string, allowed ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.fail(n, "%s must be a mapping", what)
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case allowed != nil && !slices.Contains(allowed, k.Value):
			p.fail(k, "unknown field %q in %s (known: %s)", k.Value, what, strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			p.fail(k, "%s repeats %q", what, k.Value)
		}
		out[k.Value] = v
	}
	return out
}

func (p *parser) scalar(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.fail(n, "%s must be a single value", what)
		return ""
	}
	return n.Value
}

func (p *parser) list(n *yaml.Node, what string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "%s must be a list", what)
		return nil
	}
	return n.Content
}

func (p *parser) document(n *yaml.Node) File {
	var f File
	top := p.fields(n, "the config file", "upstreams", "prices", "tool_prices", "tool_call_reserve", "tool_result_reserve", "tenants")
	if v := top["upstreams"]; v != nil {
		for _, u := range p.list(v, "upstreams") {
			f.Upstreams = append(f.Upstreams, p.upstream(u))
		}
		if len(f.Upstreams) == 0 && p.err == nil {
			// As no list: every request to --upstream, with the clients' keys.
			p.fail(v, "upstreams is empty: list the upstreams, or leave upstreams out to send to --upstream")
		}
	}
	if v := top["prices"]; v != nil {
		f.Prices = p.prices(v)
	}
	if v := top["tool_prices"]; v != nil {
		f.ToolPrices = p.toolPrices(v)
	}
	for _, r := range []struct {
		name string
		dst  *int64
	}{{"tool_call_reserve", &f.ToolCallReserve}, {"tool_result_reserve", &f.ToolResultReserve}} {
		if v := top[r.name]; v != nil {
			n, err := strconv.ParseInt(p.scalar(v, r.name), 10, 64)
			if err != nil || n <= 0 {
				p.fail(v, "%s must be a whole number above 0", r.name)
			}
			*r.dst = n
		}
	}
	if v := top["tenants"]; v != nil {
		for _, t := range p.list(v, "tenants") {
			f.Tenants = append(f.Tenants, p.tenant(t))
		}
		if len(f.Tenants) == 0 && p.err == nil {
			// As no list: virtual keys off, each client's own key passing
			// through. Say which is meant.
			p.fail(v, "tenants is empty: list the tenants, or leave tenants out for each client's own key to pass through to the upstream")
		}
	}
	if p.err == nil {
		p.checkTenants(top["tenants"], f.Tenants)
	}
	return f
}

func (p *parser) upstream(n *yaml.Node) Upstream {
	m := p.fields(n, "an upstream", "prefix", "url", "api", "key_env", "headers", "breaker", "fallbacks")
	u := Upstream{pos: p.at(n)}
	if v := m["prefix"]; v != nil {
		u.Prefix = p.scalar(v, "prefix")
		if err := checkPrefix(u.Prefix); err != nil {
			p.fail(v, "prefix: %v", err)
		}
	} else {
		p.fail(n, "an upstream needs a prefix (such as /v1)")
	}
	if v := m["url"]; v != nil {
		var err error
		if u.URL, err = ParseUpstreamURL(p.scalar(v, "url")); err != nil {
			p.fail(v, "url: %v", err)
		}
	} else {
		p.fail(n, "an upstream needs a url")
	}
	u.API = OpenAI
	if v := m["api"]; v != nil {
		u.API = API(p.scalar(v, "api"))
		if u.API != OpenAI && u.API != Anthropic {
			p.fail(v, "api must be openai or anthropic, got %q", u.API)
		}
	}
	if v := m["key_env"]; v != nil {
		u.KeyEnv = p.scalar(v, "key_env")
	}
	if v := m["headers"]; v != nil {
		u.Header = p.headers(v, "an upstream")
	}
	if v := m["breaker"]; v != nil {
		b := p.breaker(v)
		u.Breaker = &b
	}
	if v := m["fallbacks"]; v != nil {
		for _, f := range p.list(v, "fallbacks") {
			u.Fallbacks = append(u.Fallbacks, p.fallback(f, &u))
		}
	}
	return u
}

// breaker reads an upstream's breaker block; "off" turns a rule off.
func (p *parser) breaker(n *yaml.Node) BreakerSpec {
	m := p.fields(n, "a breaker", "consecutive_failures", "failure_ratio", "min_calls", "ratio_window", "cool_down",
		"probes", "allow_unterminated_streams")
	var b BreakerSpec
	for _, f := range []struct {
		name string
		dst  *int
	}{{"consecutive_failures", &b.ConsecutiveFailures}, {"min_calls", &b.MinCalls}} {
		if v := m[f.name]; v != nil {
			s := p.scalar(v, f.name)
			i, err := strconv.Atoi(s)
			switch {
			case s == "off":
				i = -1
			case err != nil || i < 1:
				p.fail(v, "%s must be a whole number >= 1, or off, got %q", f.name, s)
			}
			*f.dst = i
		}
	}
	if b.ConsecutiveFailures < 0 && b.MinCalls < 0 {
		p.fail(n, "consecutive_failures and min_calls are both off: no rule would ever open a circuit")
	}
	if v := m["failure_ratio"]; v != nil {
		s := p.scalar(v, "failure_ratio")
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f > 0 && f <= 1) {
			p.fail(v, "failure_ratio must be a number above 0 and at most 1 (0.5: half the calls), got %q", s)
		}
		b.FailureRatio = f
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{{"ratio_window", &b.RatioWindow}, {"cool_down", &b.CoolDown}} {
		if v := m[f.name]; v != nil {
			s := p.scalar(v, f.name)
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				p.fail(v, "%s must be a duration above zero, such as 30s, got %q", f.name, s)
			}
			*f.dst = d
		}
	}
	if v := m["probes"]; v != nil {
		s := p.scalar(v, "probes")
		i, err := strconv.Atoi(s)
		if err != nil || i < 1 || i > 1000 {
			p.fail(v, "probes must be a whole number from 1 to 1000, got %q", s)
		}
		b.Probes = i
	}
	if v := m["allow_unterminated_streams"]; v != nil {
		switch s := p.scalar(v, "allow_unterminated_streams"); s {
		case "true", "false":
			b.AllowUnterminatedStreams = s == "true"
		default:
			p.fail(v, "allow_unterminated_streams must be true or false, got %q", s)
		}
	}
	if _, err := httpguard.NewBreaker(b.config()); err != nil && p.err == nil {
		p.fail(n, "breaker: %s", strings.TrimPrefix(err.Error(), "httpguard: breaker: "))
	}
	return b
}

// keyHeaders carry keys: a fallback's comes from its key_env only.
var keyHeaders = []string{"Authorization", "Proxy-Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "Cookie"}

// connectionHeader reports whether a header named name speaks of one
// connection or of the message's framing: the hop-by-hop headers (RFC 9110
// 7.6.1; Proxy-Connection, Keep-Alive and HTTP2-Settings too), any Proxy-*
// header (for a proxy between, not the upstream), Content-Length and
// Expect. net/http drops some of them from what it sends (Content-Length,
// Transfer-Encoding, Trailer) and obeys others (Connection: close opens a
// connection for every attempt); its HTTP/2 transport refuses a request
// with Connection, Upgrade, Keep-Alive, Proxy-Connection or
// Transfer-Encoding, and a server one with a TE other than trailers, so
// that every request to such an upstream would fail. The proxy sends each
// attempt's body whole, with its length, and asks for no 100 Continue.
func connectionHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings", "Content-Length", "Expect":
		return true
	}
	return hasPrefixFold(name, "Proxy-")
}

// fallback reads one of upstream u's fallbacks.
func (p *parser) fallback(n *yaml.Node, u *Upstream) Fallback {
	m := p.fields(n, "a fallback", "name", "base_url", "key_env", "headers", "models")
	f := Fallback{pos: p.at(n)}
	if v := m["base_url"]; v != nil {
		var err error
		if f.URL, err = ParseUpstreamURL(p.scalar(v, "base_url")); err != nil {
			p.fail(v, "base_url: %v", err)
		}
	} else {
		p.fail(n, "a fallback needs a base_url")
	}
	if v := m["key_env"]; v != nil {
		f.KeyEnv = p.scalar(v, "key_env")
	}
	if f.KeyEnv == "" {
		p.fail(n, "a fallback needs key_env, the environment variable holding its key (never the key itself)")
	}
	if v := m["name"]; v != nil {
		if f.Name = p.scalar(v, "name"); f.Name == "" {
			p.fail(v, "name must not be empty (leave it out to name the fallback by its host)")
		}
	}
	if name := f.name(); u.URL != nil && name == u.URL.Host || slices.ContainsFunc(u.Fallbacks, func(g Fallback) bool { return g.name() == name }) {
		p.fail(n, "the name %q is taken by the upstream (named by its host) or an earlier fallback: give this one a name", name)
	}
	if v := m["headers"]; v != nil {
		f.Header = p.headers(v, "a fallback")
	}
	if v := m["models"]; v != nil && p.fields(v, "models") != nil {
		f.Models, f.modelsPos = map[string]string{}, map[string]string{}
		for i := 0; i+1 < len(v.Content); i += 2 {
			from, to := v.Content[i].Value, v.Content[i+1]
			f.Models[from] = p.scalar(to, from)
			f.modelsPos[from] = p.at(to)
			if from == "" || f.Models[from] == "" {
				p.fail(to, "models maps %q to %q: neither may be empty", from, f.Models[from])
			}
			if strings.Contains(from, "*") || strings.Contains(f.Models[from], "*") {
				p.fail(to, "models maps model names, not patterns: %q to %q would map only a model of that name (list each model a request may name)", from, f.Models[from])
			}
		}
	}
	return f
}

// name is the fallback's name: Name, or its host.
func (f *Fallback) name() string {
	if f.Name != "" || f.URL == nil {
		return f.Name
	}
	return f.URL.Host
}

// headers reads the headers an upstream or a fallback (what) sets on
// every request sent to it; nil when v is not a mapping. A key, a header
// of the connection or the framing (connectionHeader) and Accept-Encoding,
// which net/http's transport sets itself, are refused.
func (p *parser) headers(v *yaml.Node, what string) http.Header {
	if p.fields(v, "headers") == nil {
		return nil
	}
	h := http.Header{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		name, hv := v.Content[i].Value, v.Content[i+1]
		value := p.scalar(hv, name)
		switch {
		case slices.ContainsFunc(keyHeaders, func(k string) bool { return strings.EqualFold(k, name) }):
			p.fail(hv, "headers may not set %s: the key comes from key_env, never from the config file", name)
		case !validHeader(name, ""):
			// Not quoted: "x-portkey-api-key:pk-…" (no space after the colon)
			// is one YAML scalar, the key inside the name.
			p.fail(hv, "headers: a name that is not a header's (not shown: it may hold a key); write each header as name: value, with a space after the colon")
		case strings.EqualFold(name, "Host") || !validHeader(name, value):
			p.fail(hv, "headers: %q is not a header %s can set", name, what)
		case strings.EqualFold(name, "Accept-Encoding"):
			p.fail(hv, "headers may not set %s: net/http asks for gzip itself and undoes it, so that the budgets read each answer's usage, the Breaker checks each stream's end and the real keys are masked; an answer compressed as a header asked would reach none of them", name)
		case connectionHeader(name):
			p.fail(hv, "headers may not set %s: it speaks of one connection or of the message's framing, which net/http sets itself for each request (an HTTP/2 upstream refuses a request carrying it), not of what the upstream should do", name)
		case len(h.Values(name)) > 0:
			// Names are case-insensitive: fields sees two spellings as two.
			p.fail(hv, "headers repeat %q", name)
		}
		h.Set(name, value)
	}
	return h
}

// validHeader reports whether a header of this name and value can be sent:
// a token for a name, no control characters in the value.
func validHeader(name, value string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c > '~' || c <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return !strings.ContainsFunc(value, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f })
}

// checkPrefix accepts a clean absolute path without a trailing slash.
func checkPrefix(prefix string) error {
	switch {
	case !strings.HasPrefix(prefix, "/"):
		return fmt.Errorf("%q must start with /", prefix)
	case prefix != "/" && strings.HasSuffix(prefix, "/"):
		return fmt.Errorf("%q must not end with /", prefix)
	case !cleanPath(prefix):
		return fmt.Errorf("%q must be a clean path (no //, . or .. segments)", prefix)
	case url.PathEscape(prefix) != strings.ReplaceAll(prefix, "/", "%2F"):
		return fmt.Errorf("%q must hold only characters that need no escaping", prefix)
	}
	return nil
}

// ParseUpstreamURL checks an upstream base URL: http or https, a host name,
// a clean path (one trailing slash is dropped), no user info, query or
// fragment, nothing around it.
func ParseUpstreamURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	var ue *url.Error
	switch {
	case strings.TrimSpace(s) != s:
		// url.Parse keeps a trailing space in the path (/v1%20), where
		// the upstream serves none.
		return nil, errors.New("a space or a line break around the URL (from an env file?): write it without them")
	case errors.As(err, &ue):
		return nil, fmt.Errorf("not a URL: %s", unquotedParseError(ue.Err)) // not the URL itself, which may hold a key
	case err != nil:
		return nil, err
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: the scheme must be http or https", withoutSecrets(u))
	case u.Host == "":
		return nil, fmt.Errorf("%q has no host", withoutSecrets(u))
	case u.User == nil && strings.Contains(s, "@"):
		// A password holding a /, ? or # unescaped ends the authority
		// there; when what precedes it reads as host:port
		// (https://user:1234/sk-…@host), the rest is the path, query or
		// fragment, and the host the password's start.
		return nil, errors.New("an @ after the URL's host: user info, or a path that must escape its @ as %40 (the URL is not shown: it may hold a key; keys come from key_env)")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q must not carry user info, a query or a fragment (keys come from key_env)", withoutSecrets(u))
	case u.Hostname() == "":
		// A port alone: net's dialer takes an empty host for the local
		// machine, and http://${HOST}:4000/v1 with HOST unset would send
		// the real keys to whatever listens on this one's port 4000.
		return nil, fmt.Errorf("%q has no host", withoutSecrets(u))
	case !portInRange(u.Port()):
		// url.Parse wants digits only: every request would fail to dial,
		// retried for half a minute, and be answered 502.
		return nil, fmt.Errorf("%q: the port must be from 1 to 65535", withoutSecrets(u))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	if u.Path != "" && !cleanPath(u.Path) {
		// Sent as written, for the upstream to resolve its own way.
		return nil, fmt.Errorf("%q: the path must be a clean path (no //, . or .. segments)", withoutSecrets(u))
	}
	return u, nil
}

// portInRange reports whether port, a URL's (digits, or empty for the
// scheme's), is one a TCP connection can have.
func portInRange(port string) bool {
	n, err := strconv.Atoi(port)
	return port == "" || err == nil && n >= 1 && n <= 65535
}

// unquotedParseError is the text of err, an error of url.Parse, without
// the part of the URL it quotes: a password holding a /, ? or # unescaped
// ends the URL's authority there, and is quoted as its host's port
// ("invalid port \":sk-…\" after host").
func unquotedParseError(err error) string {
	s := err.Error()
	i, j := strings.IndexByte(s, '"'), strings.LastIndexByte(s, '"')
	if i < 0 || j <= i {
		return s
	}
	return s[:i] + "(not shown)" + s[j+1:]
}

// withoutSecrets is u for errors: its scheme, host and path, never its user
// info, query or fragment, where a key may be; and its host and path only
// for an http or https URL with a host: a key pasted in place of the URL
// parses as a path, a host or a scheme.
func withoutSecrets(u *url.URL) string {
	if (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	}
	// Neither its host nor a scheme that does not read as one: a key
	// pasted in place of the URL may be either ("sk-…:…", "//sk-…").
	if u.Scheme == "" || len(u.Scheme) > len("https") || strings.ContainsFunc(u.Scheme, func(r rune) bool { return r < 'a' || r > 'z' }) {
		return "(a URL not shown)"
	}
	return u.Scheme + ":…"
}

// prices reads the prices mapping through httpguard.LoadPrices, one model
// at a time so that an error names the model's line.
func (p *parser) prices(n *yaml.Node) httpguard.PriceTable {
	if n.Kind != yaml.MappingNode {
		p.fail(n, "prices must be a mapping of model names to prices")
		return nil
	}
	out := httpguard.PriceTable{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		price := p.price(v, fmt.Sprintf("the price of %q", k.Value), priceFields)
		if p.err != nil {
			return nil
		}
		b, err := json.Marshal(map[string]map[string]any{k.Value: price})
		if err != nil {
			p.fail(v, "the price of %q: every price must be a decimal number of dollars", k.Value)
			return nil
		}
		t, err := httpguard.LoadPrices(bytes.NewReader(b))
		if err != nil {
			p.fail(k, "%s", strings.TrimPrefix(err.Error(), "httpguard: prices: "))
			return nil
		}
		if _, dup := out[k.Value]; dup {
			p.fail(k, "prices repeat %q", k.Value)
		}
		out[k.Value] = t[k.Value]
	}
	return out
}

// priceFields are the fields of a price in YAML, as in LoadPrices's JSON;
// a long_context price has them and its "above".
var priceFields = []string{"input", "cached_input", "cache_write", "cache_write_1h", "output", "audio_input", "audio_output", "image_input", "image_output", "request", "long_context"}

// price reads one model's price as LoadPrices's JSON has it.
func (p *parser) price(n *yaml.Node, what string, allowed []string) map[string]any {
	out := map[string]any{}
	for name, f := range p.fields(n, what, allowed...) {
		if name == "long_context" {
			out[name] = p.price(f, what+": long_context", append([]string{"above"}, priceFields[:len(priceFields)-1]...))
			continue
		}
		// An empty value (output: with nothing after it) is left out, as
		// JSON leaves it: json.Number("") would marshal as 0, making a
		// forgotten price free; LoadPrices says input and output are missing.
		if v := p.scalar(f, name); v != "" {
			out[name] = json.Number(v)
		}
	}
	return out
}

// toolPrices reads the tool_prices mapping: tool types to dollars per
// call.
func (p *parser) toolPrices(n *yaml.Node) map[string]httpguard.Money {
	if n.Kind != yaml.MappingNode {
		p.fail(n, "tool_prices must be a mapping of tool types to dollars per call (such as web_search: 0.01)")
		return nil
	}
	out := map[string]httpguard.Money{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fee, err := httpguard.ParseMoney(p.scalar(v, k.Value))
		switch _, dup := out[strings.ToLower(k.Value)]; {
		case p.err != nil:
			return nil
		case err != nil || fee < 0:
			p.fail(v, "tool_prices: %q: a fee must be a decimal number of dollars per call, at least 0", k.Value)
		case dup:
			p.fail(k, "tool_prices repeat %q", k.Value)
		}
		out[strings.ToLower(k.Value)] = fee
	}
	return out
}

func (p *parser) tenant(n *yaml.Node) Tenant {
	m := p.fields(n, "a tenant", "name", "key_sha256", "budget", "limits", "models")
	var t Tenant
	if v := m["name"]; v != nil {
		t.Name = p.scalar(v, "name")
	}
	if t.Name == "" {
		p.fail(n, "a tenant needs a name")
	}
	if v := m["key_sha256"]; v != nil {
		h, err := hex.DecodeString(p.scalar(v, "key_sha256"))
		if err != nil || len(h) != sha256.Size {
			p.fail(v, "key_sha256 must be 64 hex digits, the SHA-256 of the tenant's key (printf %%s KEY | sha256sum)")
		}
		copy(t.KeySHA256[:], h)
		if t.KeySHA256 == sha256.Sum256(nil) || t.KeySHA256 == sha256.Sum256([]byte("\n")) {
			// No client can send it: a request without a key is refused,
			// and a header cannot carry a line break.
			p.fail(v, "key_sha256 is the SHA-256 of an empty key (was the key's variable unset?): make it of the tenant's key, printf %%s \"$KEY\" | sha256sum")
		}
	} else {
		p.fail(n, "tenant %q needs key_sha256, the SHA-256 of its virtual key", t.Name)
	}
	if v := m["budget"]; v != nil {
		b := p.budget(v)
		t.Budget = &b
	}
	if v := m["limits"]; v != nil {
		t.Limits = p.limits(v)
	}
	if v := m["models"]; v != nil {
		for _, mn := range p.list(v, "models") {
			t.Models = append(t.Models, p.scalar(mn, "a model"))
			if m := t.Models[len(t.Models)-1]; strings.Contains(m, "*") {
				// As prices' "*" would have it; but a request names models.
				p.fail(mn, "models lists model names, not patterns: %q is none a request names (leave models out to allow every model)", m)
			}
		}
		if len(t.Models) == 0 && p.err == nil {
			// An empty list would allow every model, as no list does: say
			// which is meant.
			p.fail(v, "models is empty: list the models the tenant may use, or leave models out to allow every model")
		}
	}
	return t
}

func (p *parser) budget(n *yaml.Node) BudgetSpec {
	m := p.fields(n, "a budget", "limit", "window", "period")
	var b BudgetSpec
	if v := m["limit"]; v != nil {
		var err error
		if b.Limit, err = ParseDollars(p.scalar(v, "limit")); err != nil {
			p.fail(v, "limit: %v", err)
		}
	} else {
		p.fail(n, "a budget needs a limit in dollars")
	}
	if v := m["window"]; v != nil {
		var err error
		if b.Window, err = ParseWindow(p.scalar(v, "window")); err != nil {
			p.fail(v, "window: %v", err)
		}
	}
	if v := m["period"]; v != nil {
		var err error
		if b.Period, err = ParsePeriod(p.scalar(v, "period")); err != nil {
			p.fail(v, "period: %v", err)
		}
		if b.Window != 0 {
			p.fail(v, "set window or period, not both")
		}
	}
	return b
}

func (p *parser) limits(n *yaml.Node) LimitSpec {
	m := p.fields(n, "limits", "rps", "burst", "tpm", "max_wait")
	var l LimitSpec
	if v := m["max_wait"]; v != nil {
		d, err := time.ParseDuration(p.scalar(v, "max_wait"))
		if err != nil || d < 0 {
			p.fail(v, "max_wait must be a duration >= 0 (0s: refuse at once rather than wait)")
		}
		l.MaxWait = d
		if d == 0 {
			l.MaxWait = -1
		}
	}
	if v := m["rps"]; v != nil {
		f, err := strconv.ParseFloat(p.scalar(v, "rps"), 64)
		if err != nil || !(f >= 0) || math.IsInf(f, 0) {
			p.fail(v, "rps must be a number of requests per second >= 0")
		}
		l.RPS = f
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"burst", &l.Burst}, {"tpm", &l.TPM}} {
		if v := m[f.name]; v != nil {
			i, err := strconv.Atoi(p.scalar(v, f.name))
			if err != nil || i < 0 {
				p.fail(v, "%s must be a whole number >= 0", f.name)
			}
			*f.dst = i
		}
	}
	if !l.isSet() { // a limits block that limits nothing is a mistake, not a choice
		p.fail(n, "limits: set rps or tpm above 0: burst and max_wait alone limit nothing")
	} else if err := l.Check(); err != nil {
		p.fail(n, "limits: %v", err)
	}
	return l
}

// checkTenants rejects two tenants with one name or one key.
func (p *parser) checkTenants(n *yaml.Node, ts []Tenant) {
	for i, t := range ts {
		for _, u := range ts[:i] {
			switch {
			case t.Name == u.Name:
				p.fail(n.Content[i], "two tenants are named %q", t.Name)
			case t.KeySHA256 == u.KeySHA256:
				p.fail(n.Content[i], "tenants %q and %q have the same key", u.Name, t.Name)
			}
		}
	}
}

// ParseDollars reads a budget limit in decimal dollars ("0.05", "20").
func ParseDollars(s string) (httpguard.Money, error) {
	m, err := httpguard.ParseMoney(s)
	if err != nil {
		return 0, errors.New(strings.TrimPrefix(err.Error(), "httpguard: "))
	}
	if m <= 0 || m > httpguard.MaxBudgetLimit {
		return 0, fmt.Errorf("%q must be above $0 and at most %v", s, httpguard.MaxBudgetLimit)
	}
	return m, nil
}

// ParseWindow reads a budget window, a Go duration of at least a minute
// (MinWindow). Whole minutes up to 12 (1m, 3m, +1m) are refused: they
// read as months.
func ParseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q must be a duration above zero, such as 1h or 24h", s)
	}
	if n, ok := strings.CutSuffix(strings.TrimPrefix(s, "+"), "m"); ok && d <= 12*time.Minute && strings.Trim(n, "0123456789") == "" {
		// A window that starts again every minute, where months were
		// meant, lets a month spend its limit tens of thousands of times.
		return 0, fmt.Errorf("%q is %v, not months: for a monthly budget use period: monthly (--budget-period monthly); write a window of minutes in seconds (%.0fs)", s, d, d.Seconds())
	}
	if d < MinWindow {
		// Each window may spend the whole limit: a window of a second
		// lets an hour spend it 3,600 times, and one of a nanosecond
		// gives every request a window of its own.
		return 0, fmt.Errorf("%q is shorter than a minute: a budget's window may spend its whole limit, so a short one caps next to nothing; pace requests with limits (rps, tpm) instead", s)
	}
	return d, nil
}

// MinWindow is the shortest budget window ParseWindow takes.
const MinWindow = time.Minute

// ParsePeriod reads daily or monthly.
func ParsePeriod(s string) (httpguard.Period, error) {
	switch s {
	case "daily":
		return httpguard.Daily, nil
	case "monthly":
		return httpguard.Monthly, nil
	}
	return 0, fmt.Errorf("%q must be daily or monthly", s)
}

// cleanPath reports whether p has no empty, "." or ".." segments: no
// "//" and no trailing slash (an empty last segment, which some servers
// ignore, so that /v1/chat/completions/ would run as chat completions
// without looking like them to the stack). "/" alone is clean. Nor may
// p hold a backslash, which servers on Windows (IIS) and some routers
// take as a separator (..\ a dot segment), or a control character (a
// NUL ends a path in C servers), a ? or a # (a front that forwards the
// decoded path, as nginx's proxy_pass with $uri does, starts the query or
// fragment there: /v1/chat/completions%3F/count_tokens, which a budget
// frees by its end, runs a chat completion): escaped, they pass every
// check above and reach the upstream as they were sent.
func cleanPath(p string) bool {
	if p == "/" {
		return true
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c == '\\' || c == '?' || c == '#' || c < ' ' || c == 0x7f }) {
		return false
	}
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
