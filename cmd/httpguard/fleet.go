package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/holysheep/httpguard/redisguard"
	"github.com/redis/go-redis/v9"
)

// This file is `httpguard demo --fleet N`: N replicas of one service, first
// each with its own layers, then sharing one Budget and one Limiter through
// Redis, against one provider.
//
// The replicas are goroutines, each with what a process of its own would
// have: its own Retrier, Budget, Limiter, stores, Redis connection pool and
// HTTP transport. They share no Go object, only the Redis server and the
// provider, as processes do; the real multi-process proof (processes
// killed, Redis killed) is in redisguard's tests. Goroutines keep the demo
// one portable command that runs in a few seconds.

// The fleet demo's workload: each replica is set up as the service would
// be, for the provider's rate and with the cap meant for the whole service.
const (
	fleetProviderRate  = 40 // requests/s the provider takes, and each replica's Limiter is set to
	fleetProviderBurst = 10
	fleetLimiterBurst  = 5 // below the provider's, so that the Limiter never drains its bucket
	// fleetRequests is the logical requests per replica: more than
	// fleetCap pays for, so that each per-process replica's own cap stops
	// it, as the fleet's shared cap stops the fleet.
	fleetRequests    = 40
	fleetConcurrency = 4 // per replica
	maxFleet         = 32
	// fleetCap is each replica's Budget Limit, about 34 requests' worth at
	// demoPrices (a Budget, reserving each request's worst case, stops at
	// 29): a fleet sharing it stops there, while per-process replicas
	// spend it each.
	fleetCap httpguard.Money = 400_000
	// fleetTimeout bounds each Redis call: above redisguard's default, as
	// the embedded Redis runs its scripts in Go on the demo's own cores.
	fleetTimeout = time.Second
)

// fleetRow is one line of the fleet table: N replicas in one mode.
type fleetRow struct {
	mode     string
	shared   bool // the replicas shared one Budget (fleet mode)
	replicas int
	requests int // logical requests sent
	ok       int // ... answered
	stats    httpguardtest.Stats
	rate     float64         // server hits per second while they came
	billed   httpguard.Money // what the provider billed
}

// fleetStores makes the stores of replica i; nil stores mean the layers'
// in-memory defaults. close releases them.
type fleetStores func(i int) (budget httpguard.BudgetStore, limits httpguard.LimitStore, close func(), err error)

// fleetDemo runs n replicas with per-process layers, then n in fleet mode
// on the Redis server at redisAddr (a host:port or redis:// URL; "" starts
// an embedded miniredis), prints the table to w and returns its rows.
func fleetDemo(ctx context.Context, w io.Writer, n int, redisAddr string) ([]fleetRow, error) {
	opts, where, stop, err := fleetRedis(ctx, redisAddr)
	if err != nil {
		return nil, err
	}
	defer stop()
	var id [6]byte
	rand.Read(id[:])
	name := "demo-" + hex.EncodeToString(id[:]) // a fresh cap and limit for each run
	const prefix = "httpguard-demo"
	if redisAddr != "" {
		defer forget(ctx, opts, prefix+":"+name) // also when the run is interrupted
	}

	fmt.Fprintf(w, "httpguard demo --fleet %d: %d replicas of one service, each with Retrier → Budget → Limiter set up\n", n, n)
	fmt.Fprintf(w, "for the provider's %d requests/s (burst %d) and a cap of %v; each sends %d requests, %d at a time,\n",
		fleetProviderRate, fleetLimiterBurst, fleetCap, fleetRequests, fleetConcurrency)
	fmt.Fprintf(w, "to one embedded provider that takes %d requests/s (burst %d) and answers 429 beyond (priced like\n", fleetProviderRate, fleetProviderBurst)
	fmt.Fprintf(w, "deepseek-v3.2). In fleet mode the replicas share one Budget and one Limiter through Redis, here\n%s.\n\n", where)

	perProcess := func(int) (httpguard.BudgetStore, httpguard.LimitStore, func(), error) {
		return nil, nil, func() {}, nil
	}
	shared := func(int) (httpguard.BudgetStore, httpguard.LimitStore, func(), error) {
		client := redis.NewClient(opts) // a pool per replica, as per process
		bs, err := redisguard.NewBudgetStore(client, redisguard.BudgetStoreConfig{Name: name, Prefix: prefix, Timeout: fleetTimeout})
		if err != nil {
			client.Close()
			return nil, nil, nil, err
		}
		ls, err := redisguard.NewLimitStore(client, redisguard.LimitStoreConfig{Name: name, Prefix: prefix, Timeout: fleetTimeout})
		if err != nil {
			bs.Close()
			client.Close()
			return nil, nil, nil, err
		}
		return bs, ls, func() { ls.Close(); bs.Close(); client.Close() }, nil
	}
	var rows []fleetRow
	for _, m := range []struct {
		name   string
		stores fleetStores
		shared bool
	}{{"per-process layers", perProcess, false}, {"fleet mode (Redis)", shared, true}} {
		r, err := runFleet(ctx, n, m.stores)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", m.name, err)
		}
		r.mode, r.shared = m.name, m.shared
		rows = append(rows, r)
	}
	if err := printFleetTable(w, rows); err != nil {
		return rows, err
	}
	fmt.Fprintf(w, "\nSPEND is what the provider billed; each replica's Budget was capped at %v. RATE SEEN is the\n", fleetCap)
	fmt.Fprintf(w, "provider's hits per second from the first to the last: a Limiter's burst of %d at the start counts\n", fleetLimiterBurst)
	fmt.Fprintf(w, "in it, which the provider's burst of %d takes, so a short run may show more than %d/s with no 429.\n", fleetProviderBurst, fleetProviderRate)
	fmt.Fprintf(w, "Per-process layers each keep a cap and a rate of their own: %d replicas may spend %d times the cap,\n", n, n)
	fmt.Fprintf(w, "and sending at %d times the provider's rate they draw 429s and back off. In fleet mode they share both.\n", n)
	return rows, keptFleetCap(rows)
}

// keptFleetCap reports an error when the replicas sharing one Budget let
// the provider bill more than its cap: the fleet table's one exact promise,
// which the demo checks (and exits 1) rather than only print it.
func keptFleetCap(rows []fleetRow) error {
	for _, r := range rows {
		if r.shared && r.billed > fleetCap {
			return fmt.Errorf("%s: the provider billed %v, over the %v cap the replicas share: a broken promise, please report it", r.mode, r.billed, fleetCap)
		}
	}
	return nil
}

// fleetRedis returns the options of the demo's Redis clients and says
// where the server is: at addr, or an embedded miniredis when addr is "".
func fleetRedis(ctx context.Context, addr string) (*redis.Options, string, func(), error) {
	if addr == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, "", nil, fmt.Errorf("starting the embedded Redis: %w", err)
		}
		return &redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true},
			"an embedded miniredis on " + mr.Addr() + " (--redis ADDR uses a real server)", mr.Close, nil
	}
	opts, err := redisOptions(addr)
	if err != nil {
		return nil, "", nil, fmt.Errorf("--redis: %w", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		return nil, "", nil, fmt.Errorf("--redis: no answer from %s: %w", opts.Addr, err) // the address only: a URL may hold a password
	}
	return opts, "the server at " + opts.Addr, func() {}, nil
}

// forget deletes the keys a run left in a real Redis: the budget's never
// expire. It does so even when ctx has ended (the run was interrupted),
// within a few seconds.
func forget(ctx context.Context, opts *redis.Options, tag string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	c := redis.NewClient(opts)
	defer c.Close()
	it := c.Scan(ctx, 0, "*"+tag+"*", 100).Iterator()
	for it.Next(ctx) {
		c.Del(ctx, it.Val())
	}
}

// runFleet runs n replicas, with stores made by stores, against a fresh
// provider.
func runFleet(ctx context.Context, n int, stores fleetStores) (fleetRow, error) {
	srv, err := httpguardtest.NewServer(httpguardtest.Config{Latency: time.Millisecond, CachedTokens: 16,
		RequestsPerSecond: fleetProviderRate, Burst: fleetProviderBurst})
	if err != nil {
		return fleetRow{}, err
	}
	defer srv.Close()
	if err := reach(ctx, srv); err != nil {
		return fleetRow{}, err
	}
	var clients []*http.Client
	for i := range n {
		bs, ls, release, err := stores(i)
		if err != nil {
			return fleetRow{}, err
		}
		defer release()
		c, base, err := fleetClient(bs, ls)
		if err != nil {
			return fleetRow{}, err
		}
		defer base.CloseIdleConnections()
		clients = append(clients, c)
	}

	watch := watchArrivals(srv)
	url := srv.BaseURL() + "/chat/completions"
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered, _, _ := runWorkload(ctx, c, url, requestBody, fleetRequests, fleetConcurrency) // ctx ending is checked below
			ok.Add(int64(answered))
		}()
	}
	wg.Wait()
	rate := watch() // stops the watching goroutine, also when ctx has ended
	if err := ctx.Err(); err != nil {
		return fleetRow{}, err
	}
	r := fleetRow{replicas: n, requests: n * fleetRequests, ok: int(ok.Load()), stats: srv.Stats(), rate: rate}
	r.billed = cost(r.stats, prices()["deepseek-v3.2"])
	return r, nil
}

// fleetClient is one replica's client: Retrier → Budget → Limiter, on the
// stores given (nil: the layers' own in-memory stores), over a transport of
// its own.
func fleetClient(bs httpguard.BudgetStore, ls httpguard.LimitStore) (*http.Client, *http.Transport, error) {
	r, err := httpguard.NewRetrier(guardedPolicy())
	if err != nil {
		return nil, nil, err
	}
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: fleetCap, Prices: prices(), Store: bs})
	if err != nil {
		return nil, nil, err
	}
	l, err := httpguard.NewLimiter(httpguard.LimitConfig{RequestsPerSecond: fleetProviderRate, Burst: fleetLimiterBurst, Store: ls})
	if err != nil {
		return nil, nil, err
	}
	base := demoTransport(fleetConcurrency)
	return &http.Client{Transport: httpguard.Chain(base, r, b, l)}, base, nil
}

// watchArrivals samples srv's request count every millisecond until the
// returned function is called, which returns the rate at which requests
// reached the server, from the first to the last.
func watchArrivals(srv *httpguardtest.Server) func() float64 {
	done := make(chan struct{})
	var first, last time.Time
	var count int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if c := srv.Stats().Requests; c != count {
					if count == 0 {
						first = now
					}
					count, last = c, now
				}
			}
		}
	}()
	return func() float64 {
		close(done)
		wg.Wait()
		if span := last.Sub(first).Seconds(); span > 0 && count > 1 {
			return float64(count-1) / span
		}
		return 0
	}
}

// printFleetTable prints the fleet table.
func printFleetTable(w io.Writer, rows []fleetRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tREPLICAS\tANSWERED\tSERVER HITS\tRATE SEEN\t429s\tSPEND\tOF THE CAP")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%d\t%.1f/s\t%d\t%v\t%.0f%%\n", r.mode, r.replicas, r.ok, r.requests,
			r.stats.Requests, r.rate, r.stats.Status[http.StatusTooManyRequests], r.billed, 100*float64(r.billed)/float64(fleetCap))
	}
	return tw.Flush()
}
