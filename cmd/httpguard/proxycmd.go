package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/cmd/httpguard/internal/proxy"
	"github.com/redis/go-redis/v9"
)

// proxyFlag is one flag of `httpguard proxy`, also read from HTTPGUARD_<NAME>.
type proxyFlag struct {
	name, def, arg, usage string
}

// proxyFlags are the flags of `httpguard proxy`, in the order --help lists them.
var proxyFlags = []proxyFlag{
	{"listen", "127.0.0.1:8787", "ADDR", "address to listen on; the default takes only local clients"},
	{"metrics-listen", "", "ADDR", "address serving /metrics alone, for the operator's scraper; with tenants the\nonly one: on --listen they would show each tenant the others' budgets"},
	{"upstream", "https://api.holysheep.ai/v1", "URL", "where /v1/... goes: /v1/chat/completions goes to URL/chat/completions\n(the config file's upstreams replace it)"},
	{"upstream-key-env", "HTTPGUARD_UPSTREAM_KEY", "NAME", "environment variable holding --upstream's real key, sent in place of\ntenants' virtual keys (with tenants only)"},
	{"prices", "", "FILE", "model prices, JSON: {\"deepseek-v3.2\": {\"input\": 0.28, \"cached_input\": 0.028, \"output\": 0.42}}\n(dollars per million tokens); the config file's prices add to them"},
	{"budget", "", "DOLLARS", "spend cap for all requests together, in dollars (0.05, 20); none by default"},
	{"budget-window", "", "DURATION", "the cap's window: it starts again every DURATION (1h, 24h)"},
	{"budget-period", "", "daily|monthly", "the cap's calendar window, in UTC (instead of --budget-window);\nneither: one window for the life of the process"},
	{"rps", "0", "N", "requests per second for all requests together, per upstream host and model; 0: no limit"},
	{"burst", "0", "N", "requests that may go at once after a quiet spell, with --rps only; 0: --rps rounded up"},
	{"tpm", "0", "N", "model tokens per minute for all requests together, per host and model; 0: no limit"},
	{"max-retries", "5", "N", "retries after a failed attempt (429, 5xx, resets, timeouts); 0: none"},
	{"base-delay", "1s", "DURATION", "wait before the first retry, doubled for each next one"},
	{"max-delay", "60s", "DURATION", "longest wait between retries"},
	{"attempt-timeout", "0s", "DURATION", "how long an attempt waits for the upstream's response headers before it is\nretried (streams are never cut once they started); 0: no bound"},
	{"config", "", "FILE", "YAML config file: upstreams by path prefix with their fallbacks and circuit\nbreakers, prices, tenants (see the README)"},
	{"redis", "", "ADDR", "Redis (host:port or redis:// URL) holding the budgets and rate limits,\nshared by every proxy of a fleet"},
	{"redis-ca", "", "FILE", "CA certificates (PEM) to trust for a rediss:// --redis, in place of the system's"},
	{"redis-cert", "", "FILE", "client certificate (PEM) to present to a rediss:// --redis, which redis-server\nasks for by default (tls-auth-clients yes); with --redis-key"},
	{"redis-key", "", "FILE", "the private key (PEM) of --redis-cert"},
	{"max-request-bytes", strconv.Itoa(proxy.DefaultMaxRequestBytes), "N", "largest request body; larger ones are answered 413"},
	{"max-header-bytes", strconv.Itoa(proxy.DefaultMaxHeaderBytes), "N", "largest request line and headers; net/http allows 4096 bytes more, then answers 431"},
	{"shutdown-grace", proxy.DefaultShutdownGrace.String(), "DURATION", "on SIGINT or SIGTERM, how long requests and streams in flight may finish;\na second signal, or 0, cuts them at once (the proxy exits once their spend is settled)"},
}

func envName(flag string) string {
	return "HTTPGUARD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// proxySynopsis is how the proxy is called, printed with its errors.
const proxySynopsis = "usage: httpguard proxy [flags]\n"

func proxyUsage(w io.Writer) {
	fmt.Fprint(w, proxySynopsis+`
Proxy runs a local gateway: point an SDK's base URL at http://LISTEN/v1 (Anthropic's SDK at
http://LISTEN with a /v1/messages upstream) and its requests get retries, rate limits and a
spend cap (and, from the config file, fallbacks and circuit breakers), and the proxy serves
/healthz, /readyz and /metrics (Prometheus; with tenants, on --metrics-listen only). Each flag
can also be set by the environment variable shown; a flag on the command line wins.

`)
	for _, f := range proxyFlags {
		fmt.Fprintf(w, "  --%s %s\n", f.name, f.arg)
		for _, line := range strings.Split(f.usage, "\n") {
			fmt.Fprintf(w, "        %s\n", line)
		}
		def := f.def
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "        (default %s; env %s)\n", def, envName(f.name))
	}
}

// proxySettings are the parsed flags.
type proxySettings struct {
	listen, upstream, upstreamKeyEnv, prices, budget, budgetWindow, budgetPeriod string
	config, redis, redisCA, redisCert, redisKey, metricsListen                   string
	rps                                                                          float64
	burst, tpm, maxRetries, maxHeaderBytes                                       int
	maxRequestBytes                                                              int64
	baseDelay, maxDelay, attemptTimeout, shutdownGrace                           time.Duration
	set                                                                          map[string]bool // given on the command line or in the environment
}

// parseProxyFlags reads args, then the environment for the flags args
// does not set. Errors name the flag or the variable.
func parseProxyFlags(args []string, getenv func(string) string) (*proxySettings, error) {
	s := &proxySettings{set: map[string]bool{}}
	fs := flag.NewFlagSet("httpguard proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	str := map[string]*string{"listen": &s.listen, "metrics-listen": &s.metricsListen, "upstream": &s.upstream, "upstream-key-env": &s.upstreamKeyEnv,
		"prices": &s.prices, "budget": &s.budget, "budget-window": &s.budgetWindow, "budget-period": &s.budgetPeriod,
		"config": &s.config, "redis": &s.redis, "redis-ca": &s.redisCA, "redis-cert": &s.redisCert, "redis-key": &s.redisKey}
	for _, f := range proxyFlags {
		if p, ok := str[f.name]; ok {
			fs.StringVar(p, f.name, f.def, f.usage)
		}
	}
	float64Var(fs, &s.rps, "rps", 0)
	intVar(fs, &s.burst, "burst", 0)
	intVar(fs, &s.tpm, "tpm", 0)
	intVar(fs, &s.maxRetries, "max-retries", 5)
	durationVar(fs, &s.baseDelay, "base-delay", time.Second)
	durationVar(fs, &s.maxDelay, "max-delay", 60*time.Second)
	durationVar(fs, &s.attemptTimeout, "attempt-timeout", 0)
	int64Var(fs, &s.maxRequestBytes, "max-request-bytes", proxy.DefaultMaxRequestBytes)
	intVar(fs, &s.maxHeaderBytes, "max-header-bytes", proxy.DefaultMaxHeaderBytes)
	durationVar(fs, &s.shutdownGrace, "shutdown-grace", proxy.DefaultShutdownGrace)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { s.set[f.Name] = true })
	for _, f := range proxyFlags {
		v := getenv(envName(f.name))
		if s.set[f.name] || v == "" {
			continue
		}
		if err := fs.Set(f.name, v); err != nil {
			return nil, fmt.Errorf("%s=%q: %v", envName(f.name), v, err)
		}
		s.set[f.name] = true
	}
	return s, s.check()
}

func (s *proxySettings) check() error {
	switch {
	case s.listen == "":
		// net.Listen takes "" for every interface and a random port: an
		// empty --listen "$ADDR" would expose the proxy to the network.
		return errors.New("--listen must not be empty (127.0.0.1:8787 takes only local clients, :8787 those of every interface)")
	case s.upstreamKeyEnv == "":
		return errors.New("--upstream-key-env must name an environment variable (default HTTPGUARD_UPSTREAM_KEY)")
	case s.rps < 0:
		return fmt.Errorf("--rps must be >= 0, got %v", s.rps)
	case s.burst < 0 || s.tpm < 0 || s.maxRetries < 0:
		return errors.New("--burst, --tpm and --max-retries must be >= 0")
	case s.baseDelay < 0 || s.maxDelay < 0:
		return fmt.Errorf("--base-delay and --max-delay must be >= 0, got %v and %v", s.baseDelay, s.maxDelay)
	case s.baseDelay <= 0 && s.maxRetries > 0:
		return fmt.Errorf("--base-delay must be above 0 when retrying, got %v", s.baseDelay)
	case s.maxDelay < s.baseDelay:
		return fmt.Errorf("--max-delay (%v) must not be less than --base-delay (%v)", s.maxDelay, s.baseDelay)
	case s.budgetWindow != "" && s.budgetPeriod != "":
		return errors.New("set --budget-window or --budget-period, not both")
	case (s.budgetWindow != "" || s.budgetPeriod != "") && s.budget == "":
		return errors.New("--budget-window and --budget-period need --budget")
	case s.maxRequestBytes <= 0 || s.maxHeaderBytes <= 0:
		return errors.New("--max-request-bytes and --max-header-bytes must be above 0")
	case s.attemptTimeout < 0:
		return fmt.Errorf("--attempt-timeout must be >= 0, got %v", s.attemptTimeout)
	case s.shutdownGrace < 0:
		return fmt.Errorf("--shutdown-grace must be >= 0, got %v", s.shutdownGrace)
	case (s.redisCA != "" || s.redisCert != "" || s.redisKey != "") && s.redis == "":
		return errors.New("--redis-ca, --redis-cert and --redis-key need --redis (a rediss:// URL)")
	case s.redisCert != "" && s.redisKey == "":
		return errors.New("--redis-cert needs --redis-key, the certificate's private key")
	case s.redisKey != "" && s.redisCert == "":
		return errors.New("--redis-key needs --redis-cert, the certificate it is the key of")
	}
	if err := (proxy.LimitSpec{RPS: s.rps, Burst: s.burst, TPM: s.tpm}).Check(); err != nil {
		return fmt.Errorf("limits (--rps, --burst, --tpm): %v", err)
	}
	return nil
}

// proxyConfig turns the settings into the proxy's Config, reading the
// files they name.
func (s *proxySettings) proxyConfig(getenv func(string) string) (proxy.Config, error) {
	c := proxy.Config{
		Limits:          proxy.LimitSpec{RPS: s.rps, Burst: s.burst, TPM: s.tpm},
		Retry:           proxy.RetrySpec{MaxRetries: s.maxRetries, BaseDelay: s.baseDelay, MaxDelay: s.maxDelay, AttemptTimeout: s.attemptTimeout},
		MaxRequestBytes: s.maxRequestBytes,
		MaxHeaderBytes:  s.maxHeaderBytes,
		ShutdownGrace:   s.shutdownGrace,
		Getenv:          getenv,
	}
	if s.shutdownGrace == 0 {
		c.ShutdownGrace = time.Nanosecond // Config's zero means the default
	}
	if s.prices != "" {
		f, err := os.Open(s.prices)
		if err != nil {
			return c, fmt.Errorf("--prices: %w", err)
		}
		c.Prices, err = httpguard.LoadPrices(f)
		f.Close()
		if err != nil {
			return c, fmt.Errorf("--prices %s: %s", s.prices, strings.TrimPrefix(err.Error(), "httpguard: "))
		}
	}
	var file proxy.File
	if s.config != "" {
		f, err := os.Open(s.config)
		if err != nil {
			return c, fmt.Errorf("--config: %w", err)
		}
		file, err = proxy.ParseFile(f, s.config)
		f.Close()
		if err != nil {
			return c, err
		}
	}
	models := make([]string, 0, len(file.Prices))
	for model := range file.Prices {
		models = append(models, model)
	}
	sort.Strings(models) // the same error every time
	for _, model := range models {
		price := file.Prices[model]
		if c.Prices == nil {
			c.Prices = httpguard.PriceTable{}
		}
		// The file's prices add to --prices: a model both price
		// differently is a mistake in one of them, and neither is
		// safer to keep silently (the other may be $0).
		if old, ok := c.Prices[model]; ok && !reflect.DeepEqual(old, price) {
			return c, fmt.Errorf("model %q is priced differently by --prices %s and by %s: keep one", model, s.prices, s.config)
		}
		c.Prices[model] = price
	}
	c.ToolPrices = file.ToolPrices
	c.ToolCallReserve, c.ToolResultReserve = file.ToolCallReserve, file.ToolResultReserve
	c.Tenants = file.Tenants
	switch {
	case len(file.Upstreams) > 0 && s.set["upstream"]:
		return c, fmt.Errorf("--upstream and the upstreams of %s both say where requests go: keep one", s.config)
	case len(file.Upstreams) > 0 && s.set["upstream-key-env"]:
		return c, fmt.Errorf("--upstream-key-env names the key of --upstream, which the upstreams of %s replace: leave it out, each upstream's key_env names its key", s.config)
	case len(file.Upstreams) > 0:
		c.Upstreams = file.Upstreams
	default:
		u, err := proxy.ParseUpstreamURL(s.upstream)
		if err != nil {
			return c, fmt.Errorf("--upstream: %w", err)
		}
		c.Upstreams = []proxy.Upstream{{Prefix: "/v1", URL: u, API: proxy.OpenAI, KeyEnv: s.upstreamKeyEnv}}
	}
	if s.budget != "" {
		b := &proxy.BudgetSpec{}
		var err error
		if b.Limit, err = proxy.ParseDollars(s.budget); err != nil {
			return c, fmt.Errorf("--budget: %w", err)
		}
		if s.budgetWindow != "" {
			if b.Window, err = proxy.ParseWindow(s.budgetWindow); err != nil {
				return c, fmt.Errorf("--budget-window: %w", err)
			}
		}
		if s.budgetPeriod != "" {
			if b.Period, err = proxy.ParsePeriod(s.budgetPeriod); err != nil {
				return c, fmt.Errorf("--budget-period: %w", err)
			}
		}
		c.Budget = b
	}
	return c, nil
}

func proxyCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			proxyUsage(stdout)
			return 0
		}
	}
	s, err := parseProxyFlags(args, getenv)
	if errors.Is(err, flag.ErrHelp) { // --h, --help=true
		proxyUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "httpguard proxy: %v\n%sRun 'httpguard proxy -h' for details.\n", err, proxySynopsis)
		return 2
	}
	cfg, err := s.proxyConfig(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "httpguard proxy: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	cfg.Logger = logger
	for _, name := range unknownSettings(os.Environ(), cfg) {
		logger.Warn("httpguard proxy: an environment variable named as the flags' is no setting of httpguard proxy, nor a key variable of its configuration: ignored",
			"variable", name)
	}
	if s.redis != "" {
		opts, err := redisOptions(s.redis)
		if err != nil {
			fmt.Fprintf(stderr, "httpguard proxy: --redis: %v\n", err)
			return 2
		}
		if err := (redisTLSFiles{ca: s.redisCA, cert: s.redisCert, key: s.redisKey}).apply(opts); err != nil {
			fmt.Fprintf(stderr, "httpguard proxy: %v\n", err)
			return 2
		}
		// go-redis logs its own failures (a dial that fails) in plain text
		// on the process's stderr: into the JSON log with them.
		redisLog.Store(logger)
		client := redis.NewClient(opts)
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = client.Ping(ctx).Err()
		if refusedBy(err) {
			// Redis answered, and refuses the proxy: waiting mends nothing,
			// and meanwhile the budgets would refuse every request and the
			// limiters pace each proxy alone, on the whole rate.
			cancel()
			fmt.Fprintf(stderr, "httpguard proxy: --redis: Redis at %s refuses the proxy (%v): check the user, password and database --redis names\n", opts.Addr, err)
			return 2
		}
		if untrusted(err) {
			cancel()
			fmt.Fprintf(stderr, "httpguard proxy: --redis: the TLS connection to Redis at %s failed (%v): check the host --redis names, "+
				"or give the server a certificate this system trusts\n", opts.Addr, err)
			return 2
		}
		if err != nil {
			if mismatch := tlsMismatch(err, opts); mismatch != "" {
				cancel()
				fmt.Fprintf(stderr, "httpguard proxy: --redis: the server at %s %s\n", opts.Addr, mismatch)
				return 2
			}
			if opts.TLSConfig != nil && endsWithoutClientCertificate(opts) {
				cancel()
				if s.redisCert == "" {
					fmt.Fprintf(stderr, "httpguard proxy: --redis: the Redis at %s asks for a client certificate: give one with --redis-cert and --redis-key\n", opts.Addr)
				} else {
					fmt.Fprintf(stderr, "httpguard proxy: --redis: the Redis at %s does not take the client certificate of --redis-cert %s "+
						"(it asked for one, and ended the connection): give one signed by a CA its tls-ca-cert-file holds\n", opts.Addr, s.redisCert)
				}
				return 2
			}
		}
		if err != nil {
			// Not fatal: Redis may come up later. Meanwhile the budgets fail
			// closed (and /readyz says not ready), the limiters open. The
			// address only: a URL may hold a password.
			logger.Warn("httpguard proxy: no answer from Redis yet", "addr", opts.Addr, "err", err)
		} else if budgeted(cfg) {
			warnForgetful(ctx, client, logger, opts.Addr)
		}
		cancel()
		cfg.Redis = client
	}
	p, err := proxy.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "httpguard proxy: %v\n", err)
		return 2
	}
	defer p.Close()
	// net/http's Transport writes some lines to the process's standard
	// logger (bytes an upstream sent past its answer, quoted): into the
	// JSON log with them, masked.
	stdOut, stdFlags := log.Writer(), log.Flags()
	log.SetFlags(0)
	log.SetOutput(p.ErrorLog().Writer())
	defer func() { log.SetOutput(stdOut); log.SetFlags(stdFlags) }()
	if u := p.Unguarded(); len(u) > 0 && !loopback(s.listen) {
		// As fallbacks need tenants: whoever reaches the address would
		// spend on the operator's credential.
		fmt.Fprintf(stderr, "httpguard proxy: the headers of upstream %s hold a credential (a gateway's key) and there are no tenants: "+
			"anyone who reaches --listen %s would spend on it; add tenants (one is enough), or listen on a loopback address such as 127.0.0.1:8787\n",
			strings.Join(u, ", "), s.listen)
		return 2
	}
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		fmt.Fprintf(stderr, "httpguard proxy: --listen: %v\n", err)
		return 1
	}
	if u, ok := selfAddressed(cfg.Upstreams, ln.Addr()); ok {
		ln.Close()
		fmt.Fprintf(stderr, "httpguard proxy: %s is this proxy's own address (--listen %s): each request would come back to it, "+
			"and go on to it again, until it runs out of connections; point it at the provider\n", u, s.listen)
		return 2
	}
	ctx, stop := shutdownOnSignals(p, logger, s.shutdownGrace)
	defer stop()
	if s.metricsListen != "" {
		mln, err := net.Listen("tcp", s.metricsListen)
		if err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "httpguard proxy: --metrics-listen: %v\n", err)
			return 1
		}
		defer serveMetrics(ctx, mln, p.Metrics())()
		logger.Info("httpguard proxy serving metrics", "addr", mln.Addr().String())
	}
	logger.Info("httpguard proxy listening", "addr", ln.Addr().String(), "upstreams", upstreamList(cfg.Upstreams),
		"tenants", len(cfg.Tenants), "redis", s.redis != "")
	if err := p.Serve(ctx, ln); err != nil {
		logger.Error("httpguard proxy stopped", "err", err)
		return 1
	}
	logger.Info("httpguard proxy stopped")
	return 0
}

// shutdownOnSignals returns a context that ends on the first SIGINT or
// SIGTERM, which starts p's graceful shutdown; a second one cuts what is
// still in flight at once (p.Cut), as nginx's fast shutdown does, and the
// proxy exits once the spend of each attempt sent is settled (a Redis
// store's Timeout per call at most). Later signals change nothing. stop
// stops listening for them.
func shutdownOnSignals(p *proxy.Proxy, logger *slog.Logger, grace time.Duration) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case sig := <-sigs:
			logger.Info("httpguard proxy shutting down: requests and streams in flight may finish within the grace; a second SIGINT or SIGTERM cuts them now",
				"signal", sig.String(), "grace", grace.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			logger.Info("httpguard proxy cutting the requests and streams in flight: it exits once their spend is settled", "signal", sig.String())
			p.Cut()
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		<-exited
		cancel()
	}
}

// unknownSettings returns the names in environ (NAME=VALUE pairs, as
// os.Environ has them) that read as the proxy's settings, HTTPGUARD_*,
// but name no flag and no variable c reads a key from, and are no
// Service's that Kubernetes sets (see serviceLink): a typo
// (HTTPGUARD_BUDGT) or another tool's spelling (HTTPGUARD_REDIS_URL),
// which would otherwise be ignored without a word.
func unknownSettings(environ []string, c proxy.Config) []string {
	// HTTPGUARD_KEY is the clients' key in the README's examples, which
	// may run beside the proxy.
	known := map[string]bool{"HTTPGUARD_KEY": true}
	for _, f := range proxyFlags {
		known[envName(f.name)] = true
	}
	for _, u := range c.Upstreams {
		known[u.KeyEnv] = true
		for _, f := range u.Fallbacks {
			known[f.KeyEnv] = true
		}
	}
	var out []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "HTTPGUARD_") && !known[name] && !serviceLink(name, value) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// serviceLink reports whether name=value is a variable Kubernetes gives
// every container for each Service of its namespace (enableServiceLinks,
// on by default), such as one named httpguard, the proxy's own, or
// httpguard-redis: S_SERVICE_HOST, S_SERVICE_PORT, S_SERVICE_PORT_NAME,
// S_PORT and S_PORT_N_PROTO (both proto://ip:port: HTTPGUARD_PORT=8080 is
// a setting mistaken), and S_PORT_N_PROTO_PROTO, _PORT and _ADDR.
func serviceLink(name, value string) bool {
	if strings.HasSuffix(name, "_SERVICE_HOST") || strings.HasSuffix(name, "_SERVICE_PORT") || strings.Contains(name, "_SERVICE_PORT_") {
		return true
	}
	address := strings.HasPrefix(value, "tcp://") || strings.HasPrefix(value, "udp://") || strings.HasPrefix(value, "sctp://")
	if i := strings.LastIndex(name, "_PORT_"); i >= 0 {
		rest := strings.Split(name[i+len("_PORT_"):], "_") // N, PROTO and a field
		if len(rest) >= 2 && rest[0] != "" && strings.Trim(rest[0], "0123456789") == "" && slices.Contains([]string{"TCP", "UDP", "SCTP"}, rest[1]) {
			return len(rest) == 2 && address || len(rest) == 3 && slices.Contains([]string{"PROTO", "PORT", "ADDR"}, rest[2])
		}
	}
	return strings.HasSuffix(name, "_PORT") && address
}

// selfAddressed returns the first upstream or fallback URL that dials
// addr, the proxy's own listener: one whose port is addr's and whose host
// reaches addr's IP (see reaches). Host names other than localhost are not
// resolved.
func selfAddressed(us []proxy.Upstream, addr net.Addr) (string, bool) {
	ln, ok := addr.(*net.TCPAddr)
	if !ok {
		return "", false
	}
	dialsIt := func(u *url.URL) bool {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if port != strconv.Itoa(ln.Port) {
			return false
		}
		return reaches(u.Hostname(), ln.IP)
	}
	for _, u := range us {
		if dialsIt(u.URL) {
			return "upstream " + u.Prefix + " (" + u.URL.String() + ")", true
		}
		for _, f := range u.Fallbacks {
			if dialsIt(f.URL) {
				return "a fallback of upstream " + u.Prefix + " (" + f.URL.String() + ")", true
			}
		}
	}
	return "", false
}

// reaches reports whether a connection to host, a URL's, reaches a
// listener on ip at the same port: host is ip, localhost where ip is
// 127.0.0.1 or ::1 (it names both), or, where ip is unspecified (every
// address: 0.0.0.0 every IPv4 one, :: every one), a loopback IP. The
// unspecified 0.0.0.0 and :: dial the loopback of their family. Another
// loopback address at the port (127.0.0.2, ::1 beside 127.0.0.1) is
// another socket, another server's.
func reaches(host string, ip net.IP) bool {
	if strings.EqualFold(host, "localhost") {
		return ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback) || ip.IsUnspecified()
	}
	h := net.ParseIP(host)
	switch {
	case h == nil:
		return false
	case h.Equal(net.IPv4zero):
		h = net.IPv4(127, 0, 0, 1)
	case h.Equal(net.IPv6unspecified):
		h = net.IPv6loopback
	}
	switch {
	case h.Equal(ip):
		return true
	case ip.Equal(net.IPv4zero):
		return h.To4() != nil && h.IsLoopback()
	case ip.Equal(net.IPv6unspecified):
		return h.IsLoopback()
	}
	return false
}

// loopback reports whether addr, a --listen address, takes only local
// clients: localhost or a loopback IP; an empty host listens on every
// interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// refusedBy reports whether err is Redis refusing the client: a missing or
// wrong password or user (NOAUTH, WRONGPASS, NOPERM; before Redis 6, ERR
// AUTH to a Redis without one), a database out of range, as opposed to no
// answer yet (a dial refused, a timeout, LOADING while it starts, too many
// clients). Redis's words name no password.
func refusedBy(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, code := range []string{"NOAUTH ", "WRONGPASS ", "NOPERM "} {
		if strings.HasPrefix(msg, code) {
			return true
		}
	}
	// Not every ERR: "max number of clients reached" passes.
	return strings.HasPrefix(msg, "ERR ") && (strings.Contains(msg, "DB index") || strings.Contains(msg, "AUTH"))
}

// untrusted reports whether err is a TLS handshake that failed on the
// server's certificate (unknown authority, another host's, expired):
// Redis is up, and waiting mends nothing, as with refusedBy.
func untrusted(err error) bool {
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ve)
}

// tlsMismatch returns, when err, a PING's failure, came of a server that
// does not speak the TLS opts says (a rediss:// URL sets TLSConfig), what
// to say of it; otherwise "": no answer yet. A Redis without TLS reads a
// TLS handshake as an inline command, waiting for its line's end (the
// handshake times out) or answering an error line (bytes that are no
// TLS): a PING sent plain tells it, as Redis answers it with a status or
// an error line, even without a password. A Redis that takes TLS only
// closes a plain connection (EOF): a handshake tells it, checked only for
// speaking TLS, before any byte of the protocol.
func tlsMismatch(err error, opts *redis.Options) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	network := cmp.Or(opts.Network, "tcp") // or a unix socket
	if opts.TLSConfig != nil {
		const fix = ": use a redis:// URL, or enable TLS on the server"
		if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) {
			return "does not speak TLS (it answered the TLS handshake with bytes that are no TLS)" + fix
		}
		if answersRESP(ctx, &d, network, opts.Addr) {
			return "does not speak TLS (it answers a PING sent plain, and not the TLS handshake)" + fix
		}
		return ""
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return ""
	}
	// Not verified: the certificate is not the question, and nothing is
	// sent over the connection.
	td := tls.Dialer{NetDialer: &d, Config: &tls.Config{InsecureSkipVerify: true}}
	c, err := td.DialContext(ctx, network, opts.Addr)
	if err != nil {
		return ""
	}
	c.Close()
	return "takes TLS only (it closed a plain connection, and takes a TLS handshake): use a rediss:// URL"
}

// endsWithoutClientCertificate reports whether the server at opts.Addr, a
// rediss:// one whose PING failed, asks for a client certificate in the
// TLS handshake and ends the connection when given none, or not one it
// takes (tls-auth-clients yes, redis-server's default): in TLS 1.2 with a
// handshake_failure alert, in TLS 1.3 with a certificate_required alert
// after the handshake the client took for done, which a PING sent
// meanwhile meets as a connection reset. The client's crypto/tls wraps
// neither alert in a tls.AlertError (only QUIC's do), so that the server's
// asking, which crypto/tls tells through GetClientCertificate, is the
// sign, not the alert's text. A server that asks but takes the connection
// without (tls-auth-clients optional) waits for a command: not this.
func endsWithoutClientCertificate(opts *redis.Options) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cfg := opts.TLSConfig.Clone()
	given := &tls.Certificate{} // none: crypto/tls sends an empty Certificate message
	if len(cfg.Certificates) > 0 {
		given = &cfg.Certificates[0]
	}
	var asked bool // the handshake runs on this goroutine
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked = true
		return given, nil
	}
	td := tls.Dialer{Config: cfg}
	c, err := td.DialContext(ctx, cmp.Or(opts.Network, "tcp"), opts.Addr)
	if err != nil {
		return asked // TLS 1.2: the server's alert ends the handshake
	}
	defer c.Close()
	if !asked {
		return false
	}
	deadline, _ := ctx.Deadline()
	c.SetReadDeadline(deadline)
	_, err = c.Read(make([]byte, 1)) // the server sends nothing unasked, unless it ends the connection
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// answersRESP reports whether the server at addr answers a PING sent
// plain with a line of Redis's protocol: a status ("+PONG") or an error
// ("-NOAUTH ...").
func answersRESP(ctx context.Context, d *net.Dialer, network, addr string) bool {
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(io.LimitReader(c, 512)).ReadString('\n')
	return err == nil && len(line) > 2 && (line[0] == '+' || line[0] == '-') && strings.HasSuffix(line, "\r\n")
}

// budgeted reports whether c caps spend: a proxy-wide or a tenant's budget.
func budgeted(c proxy.Config) bool {
	for _, t := range c.Tenants {
		if t.Budget != nil {
			return true
		}
	}
	return c.Budget != nil
}

// warnForgetful warns when Redis keeps no append-only file: restarted, it
// comes back empty or from its last snapshot, and the budgets' windows
// start again from what it kept, so that a fleet may spend a cap twice;
// and when it has a memory limit and a policy other than noeviction, by
// which it may evict the budgets' keys when full (a managed Redis's
// volatile-lru evicts keys that expire, as a window's do). A Redis that
// refuses INFO (a managed one may) is not checked.
func warnForgetful(ctx context.Context, client *redis.Client, logger *slog.Logger, addr string) {
	if info, err := client.Info(ctx, "persistence").Result(); err == nil && infoField(info, "aof_enabled") == "0" {
		logger.Warn("httpguard proxy: Redis keeps no append-only file: restarted, it forgets what the budgets spent since its last snapshot, "+
			"and the proxies may spend each cap again; run it with appendonly yes and maxmemory-policy noeviction", "addr", addr)
	}
	info, err := client.Info(ctx, "memory").Result()
	if policy := infoField(info, "maxmemory_policy"); err == nil && infoField(info, "maxmemory") != "0" && policy != "" && policy != "noeviction" {
		logger.Warn("httpguard proxy: Redis may evict keys when full: it may drop the budgets' keys and forget what they spent; "+
			"run it with maxmemory-policy noeviction", "addr", addr, "policy", policy)
	}
}

// infoField returns the value of field in info, what Redis's INFO
// answers ("field:value" lines), or "".
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// serveMetrics serves metrics on ln, at /metrics, until ctx ends; the
// function it returns waits for that.
func serveMetrics(ctx context.Context, ln net.Listener, metrics http.Handler) (wait func()) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	return func() {
		if stop() { // ctx has not ended: the proxy stopped on an error
			srv.Close()
		}
		<-done
	}
}

func upstreamList(us []proxy.Upstream) string {
	var out []string
	for _, u := range us {
		out = append(out, u.Prefix+" -> "+u.URL.String())
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// redisLog is the log go-redis's records go to: the proxy's JSON log once
// the proxy has started, until then the process's stderr.
var redisLog atomic.Pointer[slog.Logger]

// go-redis has one logger for the whole process, which its pools'
// goroutines read without a lock: it is set once, here, before any client
// exists, and a command that wants the records elsewhere stores its
// logger in redisLog instead of calling redis.SetLogger again under
// clients already running (a data race).
func init() { redis.SetLogger(redisLogger{}) }

// redisLogger writes go-redis's records to redisLog.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...) // go-redis starts its records with "redis: "
	if l := redisLog.Load(); l != nil {
		l.WarnContext(ctx, msg)
		return
	}
	log.Print(msg)
}
