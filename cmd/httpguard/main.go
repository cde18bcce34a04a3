// Command httpguard shows what httpguard does.
//
// Usage:
//
//	httpguard demo [-n requests] [-seed N]
//	httpguard demo --fleet N [--redis ADDR]
//	httpguard proxy [flags]
//	httpguard help [command]
//
// -n is the number of logical requests per client and scenario (default
// 200; the rate-limit scenario, which runs in real time, sends at most 40);
// -seed seeds the server's random faults (default 1), so that a run can be
// repeated.
//
// With --fleet N the demo runs N replicas of one service against one
// provider that takes 40 requests/s, each replica with a Retrier, a
// Budget and a Limiter set up for the provider's rate and the service's
// cap: first each with its own layers, then in fleet mode, sharing one
// Budget and one Limiter through Redis (package redisguard). Its table
// shows, for each mode, the total spend against the cap, the rate the
// provider saw and its 429s. Without --redis it needs no setup: an
// embedded Redis (miniredis) serves; --redis ADDR (host:port, or a
// redis:// URL) uses a real server, and deletes the keys of the run when
// done. The replicas are goroutines with nothing in common but Redis and
// the provider, as processes would be.
//
// The demo starts an embedded fault-injecting server (package httpguardtest)
// on 127.0.0.1, sends the same workloads through a plain http.Client,
// go-retryablehttp and httpguard's layers, and prints for each: the share of
// logical requests that succeeded, the requests the server saw, the
// amplification (server hits per logical request), the 429 answers, the
// callers' p50/p99 latency and what the server billed. Its scenarios are
// transient faults, a full outage, a provider rate limit and a spend cap.
// It needs no network and no configuration. Retry waits are scaled down 100
// times so that it runs in a few seconds.
//
// The proxy is a local gateway with the same guarantees for any language:
// SDKs pointed at it (base URL http://127.0.0.1:8787/v1) get retries, rate
// limits, spend caps, virtual keys per tenant and metrics; `httpguard proxy
// --help` lists its flags. Its logic is in package internal/proxy.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
)

const usageText = `httpguard shows what httpguard's layers do, and serves them to any language as a local gateway.

usage:

	httpguard demo [-n requests] [-seed N]
	httpguard demo --fleet N [--redis ADDR]
	httpguard proxy [flags]
	httpguard help [command]

The commands are:

	demo    compare a plain client, go-retryablehttp and httpguard under injected faults,
	        offline, in a few seconds; with --fleet, layers per replica against layers
	        shared through Redis
	proxy   run a local gateway with retries, rate limits, budgets, virtual keys and
	        metrics for SDKs in any language
	help    show this help, or a command's usage and flags

"httpguard help demo" (or "httpguard demo -h") and "httpguard help proxy" list a command's flags.
`

// demoSynopsis is how the demo is called, printed with its errors.
const demoSynopsis = `usage: httpguard demo [-n requests] [-seed N]
       httpguard demo --fleet N [--redis ADDR]
`

// demoUsageText is what demo -h prints: demoSynopsis, what it does, its flags.
const demoUsageText = demoSynopsis + `
Demo compares a plain http.Client, go-retryablehttp and httpguard's layers under injected faults,
on an embedded server, offline, in a few seconds. With --fleet it compares replicas with layers of
their own against replicas sharing one Budget and one Limiter through Redis.

  -n requests
        logical requests per client and scenario, at most 1000000; the rate-limit scenario,
        which runs in real time, sends at most 40 (default 200)
  -seed N
        seed of the embedded server's random faults, so that a run can be repeated (default 1)
  --fleet N
        run N replicas, 2 to 32, instead of the scenarios (default: no fleet)
  --redis ADDR
        the Redis server of --fleet, host:port or redis:// URL; the run deletes its keys
        when done (default: an embedded miniredis)
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	switch args[0] {
	case "demo":
		return demoCommand(args[1:], stdout, stderr)
	case "proxy":
		return proxyCommand(args[1:], os.Getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		return help(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "httpguard: unknown command %q\n%s", args[0], usageText)
	return 2
}

// help prints the usage of the command args names, or the top-level one.
func help(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, usageText)
	case len(args) == 1 && args[0] == "demo":
		fmt.Fprint(stdout, demoUsageText)
	case len(args) == 1 && args[0] == "proxy":
		proxyUsage(stdout)
	default:
		fmt.Fprintf(stderr, "httpguard help: unknown command %q\nRun 'httpguard help' for usage.\n", strings.Join(args, " "))
		return 2
	}
	return 0
}

// setAny reports whether any of the flags named was set on fs's command
// line.
func setAny(fs *flag.FlagSet, names ...string) bool {
	var set bool
	fs.Visit(func(f *flag.Flag) { set = set || slices.Contains(names, f.Name) })
	return set
}

func demoCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("httpguard demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the usage is ours, below
	fs.Usage = func() {}
	n, seed, fleet := new(int), new(uint64), new(int)
	intVar(fs, n, "n", 200)        // logical requests per client and scenario
	uint64Var(fs, seed, "seed", 1) // seed of the server's random faults
	intVar(fs, fleet, "fleet", 0)  // replicas sharing one Budget and one Limiter
	redisAddr := fs.String("redis", "", "the Redis server of --fleet")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, demoUsageText)
			return 0
		}
		fmt.Fprintf(stderr, "httpguard demo: %v\n%sRun 'httpguard demo -h' for details.\n", err, demoSynopsis)
		return 2
	}
	// Whether --fleet was given, not whether it is 0: --fleet 0 is a
	// fleet out of range, not the scenarios.
	fleetSet := setAny(fs, "fleet")
	var bad string
	switch {
	case *n < 1 || *n > maxDemoRequests:
		bad = fmt.Sprintf("-n must be between 1 and %d, got %d", maxDemoRequests, *n)
	case fs.NArg() > 0:
		bad = fmt.Sprintf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	case fleetSet && (*fleet < 2 || *fleet > maxFleet):
		bad = fmt.Sprintf("--fleet must be between 2 and %d", maxFleet)
	case *redisAddr != "" && !fleetSet:
		bad = "--redis needs --fleet"
	case fleetSet && setAny(fs, "n", "seed"):
		bad = "-n and -seed set the scenarios, which --fleet does not run"
	}
	if bad != "" {
		fmt.Fprintf(stderr, "httpguard demo: %s\n%sRun 'httpguard demo -h' for details.\n", bad, demoSynopsis)
		return 2
	}
	// SIGTERM too, which timeout(1), docker stop and a CI job cancelled
	// send: killed at once, a --fleet run would leave its keys in Redis.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *fleet > 0 {
		_, err = fleetDemo(ctx, stdout, *fleet, *redisAddr)
	} else {
		_, err = demo(ctx, stdout, *n, *seed)
	}
	if err != nil {
		fmt.Fprintln(stderr, "httpguard demo:", err)
		return 1
	}
	return 0
}

// maxDemoRequests bounds -n: the demo keeps a latency per request, and
// prices its spend cap at n times spendCapPerRequest, which a larger n
// would overflow (a negative cap).
const maxDemoRequests = 1_000_000

// concurrency is how many callers send requests at once.
const concurrency = 8

// scenario is one section of the demo's table.
type scenario struct {
	name       string
	what       string // one line on what the server does
	setup      setup
	requests   int // logical requests per client
	contenders []contender
}

// scaledRateLimited is a 429 asking for a 2s wait (20ms scaled) the way
// OpenAI does, in milliseconds; a whole-second Retry-After cannot be scaled.
func scaledRateLimited() httpguardtest.Fault {
	f := httpguardtest.RateLimited(0)
	f.Header = http.Header{"Retry-After-Ms": {"20"}}
	f.Message = "Rate limit reached for requests. Please try again in 20ms."
	return f
}

// spendCapPerRequest sets the spend scenario's cap: n requests get n times
// this, about half what they cost at demoPrices (11,648 nano-dollars each).
const spendCapPerRequest httpguard.Money = 5_000

// rateLimitedRequests keeps the rate-limit scenario, which runs in real
// time, to about two seconds.
func rateLimitedRequests(n int) int { return min(n, 2*providerRate) }

// scenarios defines the demo's sections; n is the -n flag.
func scenarios(n int, seed uint64) []scenario {
	server := httpguardtest.Config{Latency: time.Millisecond, CachedTokens: 16, Seed: seed}
	var out []scenario

	transient := server
	transient.FaultRate = 0.05
	transient.Faults = []httpguardtest.Fault{httpguardtest.ServiceUnavailable(), scaledRateLimited(), httpguardtest.ConnectionReset()}
	out = append(out, scenario{
		name:       "transient faults",
		what:       "5% of requests fail: 503, 429 with retry-after-ms 20, or a TCP reset",
		setup:      setup{server: transient},
		requests:   n,
		contenders: []contender{plain, naive, guarded},
	})

	outage := httpguardtest.ServiceUnavailable()
	out = append(out, scenario{
		name:       "full outage",
		what:       "every request gets 503",
		setup:      setup{server: server, outage: &outage},
		requests:   n,
		contenders: []contender{plain, naive, guarded},
	})

	limited := server
	limited.RequestsPerSecond = providerRate
	out = append(out, scenario{
		name: "provider rate limit",
		what: fmt.Sprintf("the server takes %d requests/s (burst %d), answering 429 with Retry-After beyond;\n"+
			"%d requests, in real time; the Limiter is set to %d/s, burst %d",
			providerRate, providerRate, rateLimitedRequests(n), providerRate, limiterBurst),
		setup:      setup{server: limited},
		requests:   rateLimitedRequests(n),
		contenders: []contender{plain, naive, paced},
	})

	limit := spendCapPerRequest * httpguard.Money(n)
	out = append(out, scenario{
		name: "spend cap",
		what: fmt.Sprintf("no faults; a Budget caps spend at %v, about half the workload's\n"+
			"cost at deepseek-v3.2 prices (USD 0.28 / 0.028 cached / 0.42 per 1M tokens); requests that\n"+
			"might pass the cap are refused unsent", limit),
		setup:      setup{server: server},
		requests:   n,
		contenders: []contender{plain, capped(limit)},
	})
	return out
}

// row is one line of the table.
type row struct {
	scenario, client string
	result           result
}

// demo runs every scenario, prints the table to w and returns its rows.
func demo(ctx context.Context, w io.Writer, n int, seed uint64) ([]row, error) {
	p := guardedPolicy()
	scs := scenarios(n, seed)
	fmt.Fprintf(w, "httpguard demo: %d logical requests per client and scenario, %d at a time, fault seed %d,\n", n, min(n, concurrency), seed)
	fmt.Fprintf(w, "against an embedded httpguardtest server on 127.0.0.1 answering in 1ms.\n")
	fmt.Fprintf(w, "Waits scaled 1/%d: httpguard MaxRetries %d, BaseDelay %v, MaxDelay %v, Jitter %v, MaxServerDelay %v;\n",
		timeScale, p.MaxRetries, p.BaseDelay, p.MaxDelay, p.Jitter, p.MaxServerDelay)
	fmt.Fprintf(w, "go-retryablehttp RetryMax 3, RetryWaitMin %v, RetryWaitMax %v.\n\n", time.Second/timeScale, 30*time.Second/timeScale)
	width := 0
	for _, sc := range scs {
		width = max(width, len(sc.name)+1)
	}
	for _, sc := range scs {
		for i, line := range strings.Split(sc.what, "\n") {
			label := ""
			if i == 0 {
				label = sc.name + ":"
			}
			fmt.Fprintf(w, "  %-*s %s\n", width, label, line)
		}
	}
	fmt.Fprintln(w)

	var rows []row
	for _, sc := range scs {
		wl := workload{requests: sc.requests, concurrency: concurrency, body: requestBody}
		for _, c := range sc.contenders {
			res, err := measure(ctx, sc.setup, c.newClient, wl)
			if err != nil {
				return rows, fmt.Errorf("%s, %s: %w", sc.name, c.name, err)
			}
			rows = append(rows, row{sc.name, c.name, res})
		}
	}
	if err := printTable(w, rows); err != nil {
		return rows, err
	}
	fmt.Fprint(w, tableLegend)
	for _, r := range rows {
		if r.result.budget {
			fmt.Fprintf(w, "%s, %s: Budget.Spent() reports %v of its %v limit; the server billed %v.\n",
				r.scenario, r.client, r.result.budgetSpent, r.result.budgetLimit, r.result.billed)
		}
	}
	fmt.Fprint(w, tableShows)
	if _, err := printFailover(ctx, w, n); err != nil {
		return rows, err
	}
	return rows, keptCaps(rows)
}

// keptCaps reports an error for a row whose Budget let the server bill
// more than its Limit, or counted less than the server billed: the one
// promise of the table that holds exactly, whatever the run's timing, so
// the demo checks it (and exits 1) rather than only print it.
func keptCaps(rows []row) error {
	for _, r := range rows {
		res := r.result
		switch {
		case !res.budget:
		case res.billed > res.budgetLimit:
			return fmt.Errorf("%s, %s: the server billed %v, over the Budget's %v limit: a broken promise, please report it", r.scenario, r.client, res.billed, res.budgetLimit)
		case res.budgetSpent < res.billed:
			return fmt.Errorf("%s, %s: the server billed %v, but the Budget counted %v spent: a broken promise, please report it", r.scenario, r.client, res.billed, res.budgetSpent)
		}
	}
	return nil
}

// tableLegend says what the table's columns count, and tableShows what its
// rows show, for a reader who has not seen httpguard before.
const (
	tableLegend = `
SUCCESS is the share of logical requests that got a 2xx answer; SERVER HITS the requests the
server saw (AMPLIFICATION: per logical request); 429s the server's 429 answers; P50 and P99 the
callers' latency, retries and waits included; SPEND is what the server billed, priced like deepseek-v3.2.
`
	tableShows = `
What it shows: retries turn transient faults into successes at a few percent more hits; in a full
outage httpguard's retry budget keeps the load near 1x where fixed retries multiply it, once it has
spent the few retries a fresh Retrier holds in reserve (a short run, -n 20, shows them: well above
1x); the Limiter spaces requests under the provider's rate, so it waits (its P50) rather than draws
429s and Retry-After waits; the Budget refuses, unsent, the requests that might pass its cap.
`
)

// printTable prints rows, naming each scenario once.
func printTable(w io.Writer, rows []row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tCLIENT\tSUCCESS\tSERVER HITS\tAMPLIFICATION\t429s\tP50\tP99\tSPEND")
	for i, r := range rows {
		name := r.scenario
		if i > 0 && rows[i-1].scenario == name {
			name = ""
		}
		res := r.result
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%d\t%.2fx\t%d\t%v\t%v\t%v\n", name, r.client,
			100*res.successRate(), res.stats.Requests, res.amplification(),
			res.stats.Status[http.StatusTooManyRequests], round(res.p50), round(res.p99), res.billed)
	}
	return tw.Flush()
}

// requestBody is a small chat request, as an SDK would send it.
var requestBody = []byte(`{"model":"deepseek-v3.2","messages":[{"role":"user","content":"` +
	strings.Repeat("Say ok. ", 16) + `"}],"max_tokens":16}`)

// redisOptions returns the options of a client of the Redis server at
// addr, the --redis flag of both commands: a host:port or a redis:// URL.
// Its calls end at their context's deadline, so that redisguard's stores
// need no goroutine per call to bound them.
func redisOptions(addr string) (*redis.Options, error) {
	opts := &redis.Options{Addr: addr}
	if !strings.Contains(addr, "://") {
		// Not echoed: a URL without its redis:// (user:password@host:port)
		// reads as an address, and go-redis prints the addresses it dials.
		if _, _, err := net.SplitHostPort(addr); err != nil || strings.Contains(addr, "@") {
			return nil, errors.New("not host:port, nor a redis:// URL (the value is not shown: it may hold a password)")
		}
	}
	if strings.Contains(addr, "://") {
		// A password holding a /, ? or # unescaped ends the authority
		// there; when what precedes it still reads as host:port
		// (redis://user:1234/s3cret@host), the rest of the password is
		// the path, query or fragment, which go-redis quotes in its
		// errors or ignores. Only userinfo can hold the password.
		if u, err := url.Parse(addr); err == nil && u.User == nil && strings.Contains(addr, "@") {
			return nil, errors.New("not a Redis URL: an @ after its host (the value is not shown: it may hold a password; escape a /, ? or # in it as %2F, %3F or %23)")
		}
		var err error
		if opts, err = redis.ParseURL(addr); err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				// Not the URL itself, which may hold a password, nor what
				// url.Parse quotes of it: a password holding a /, ? or #
				// ends the URL's authority there, and is quoted as its
				// host's port ("invalid port \":secret\" after host").
				err = errors.New(unquoted(ue.Err.Error()))
			}
			return nil, fmt.Errorf("not a Redis URL: %w", err)
		}
	}
	if _, port, err := net.SplitHostPort(opts.Addr); err == nil && opts.Network != "unix" {
		// SplitHostPort takes any port: one with a trailing space (from an
		// env file) or a digit too many would be dialled, and fail, for
		// as long as the proxy ran, taken for a Redis not up yet.
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("the port must be a number from 1 to 65535 (the value is not shown: it may hold a password)")
		}
	}
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// redisTLSFiles are the files of the proxy's --redis-ca, --redis-cert and
// --redis-key; "" for none.
type redisTLSFiles struct{ ca, cert, key string }

// apply reads f into opts, of a rediss:// URL (see redisOptions): f.ca's
// certificates become the only ones the client trusts, f.cert and f.key
// the certificate it presents. Errors name the flag and the file, never
// what a key holds.
func (f redisTLSFiles) apply(opts *redis.Options) error {
	if f == (redisTLSFiles{}) {
		return nil
	}
	if opts.TLSConfig == nil {
		return errors.New("--redis-ca, --redis-cert and --redis-key need a rediss:// URL in --redis (TLS)")
	}
	if f.ca != "" && opts.TLSConfig.InsecureSkipVerify {
		// skip_verify=true in the URL checks no certificate: a CA given
		// beside it would be trusted in name only.
		return errors.New("--redis-ca with skip_verify=true in --redis: the URL's skip_verify checks no certificate, so the CA would be ignored; drop skip_verify")
	}
	if f.ca != "" {
		b, err := os.ReadFile(f.ca)
		if err != nil {
			return fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("--redis-ca %s: no PEM certificate in it", f.ca)
		}
		opts.TLSConfig.RootCAs = pool
	}
	if f.cert == "" {
		return nil
	}
	certPEM, err := os.ReadFile(f.cert)
	if err != nil {
		return fmt.Errorf("--redis-cert: %w", err)
	}
	// Checked first, so that tls.X509KeyPair's errors are the key's.
	block, rest := pem.Decode(certPEM)
	for block != nil && block.Type != "CERTIFICATE" {
		block, rest = pem.Decode(rest)
	}
	if block == nil {
		return fmt.Errorf("--redis-cert %s: no PEM certificate in it", f.cert)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return fmt.Errorf("--redis-cert %s: %w", f.cert, err)
	}
	keyPEM, err := os.ReadFile(f.key)
	if err != nil {
		return fmt.Errorf("--redis-key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM) // its errors quote no key
	if err != nil {
		return fmt.Errorf("--redis-key %s, with --redis-cert %s: %w", f.key, f.cert, err)
	}
	opts.TLSConfig.Certificates = []tls.Certificate{pair}
	return nil
}

// unquoted is s without what it quotes, from its first " to its last.
func unquoted(s string) string {
	i, j := strings.IndexByte(s, '"'), strings.LastIndexByte(s, '"')
	if i < 0 || j <= i {
		return s
	}
	return s[:i] + "(not shown)" + s[j+1:]
}

// round rounds d for display.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
