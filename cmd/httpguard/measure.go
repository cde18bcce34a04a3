package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
)

// This file measures one client on one workload against a fresh embedded
// server: how many logical requests succeeded, how many requests the server
// saw, and how long callers waited.

// workload is what a client is asked to do.
type workload struct {
	requests    int    // logical requests
	concurrency int    // callers sending them at once
	body        []byte // each request's JSON body, POSTed to /v1/chat/completions
}

// setup is the server side of a scenario.
type setup struct {
	server httpguardtest.Config
	outage *httpguardtest.Fault // every request gets it when set
}

// result is what one client did on one workload.
type result struct {
	requests int // logical requests sent
	ok       int // ... that got a 2xx answer read to its end
	stats    httpguardtest.Stats
	p50, p99 time.Duration // callers' latency, logical request to body read

	billed      httpguard.Money // what the server billed, at demoPrices
	budget      bool            // the client had a Budget ...
	budgetLimit httpguard.Money // ... with this limit ...
	budgetSpent httpguard.Money // ... and it reports this spent
}

func (r result) successRate() float64 { return float64(r.ok) / float64(max(r.requests, 1)) }

// amplification is how many requests the server saw per logical request.
func (r result) amplification() float64 {
	return float64(r.stats.Requests) / float64(max(r.requests, 1))
}

// measure runs w with a client from newClient against a server built from s.
func measure(ctx context.Context, s setup, newClient newClientFunc, w workload) (result, error) {
	srv, err := httpguardtest.NewServer(s.server)
	if err != nil {
		return result{}, err
	}
	defer srv.Close()
	if err := reach(ctx, srv); err != nil {
		return result{}, err
	}
	if s.outage != nil {
		if err := srv.StartOutage(*s.outage); err != nil {
			return result{}, err
		}
	}
	base := demoTransport(w.concurrency)
	defer base.CloseIdleConnections()
	c, err := newClient(base)
	if err != nil {
		return result{}, err
	}

	ok, latencies, err := runWorkload(ctx, c.Client, srv.BaseURL()+"/chat/completions", w.body, w.requests, w.concurrency)
	if err != nil {
		return result{}, err
	}
	r := result{
		requests: w.requests,
		ok:       ok,
		stats:    srv.Stats(),
		p50:      percentile(latencies, 50),
		p99:      percentile(latencies, 99),
	}
	r.billed = cost(r.stats, prices()["deepseek-v3.2"])
	if c.budget != nil {
		r.budget, r.budgetLimit, r.budgetSpent = true, c.limit, c.budget.Spent()
	}
	return r, nil
}

// demoTransport is the base transport of a demo client: connections
// enough for its concurrency, and a bound on dialing.
func demoTransport(concurrency int) *http.Transport {
	return &http.Transport{
		DialContext:         dial,
		MaxIdleConnsPerHost: concurrency,
	}
}

// dial is how the demo's clients connect to its embedded servers; a test
// replaces it.
var dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext

// reach connects to srv once. Where 127.0.0.1 cannot be reached (a
// network namespace of its own, its loopback down), every request of a
// run fails to connect, and its table of zeros would read as results.
func reach(ctx context.Context, srv *httpguardtest.Server) error {
	c, err := dial(ctx, "tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // interrupted: the loopback is not to blame
	}
	if err != nil {
		return fmt.Errorf("the embedded server cannot be reached (is the loopback interface up?): %w", err)
	}
	return c.Close()
}

// runWorkload sends n logical requests of body to url through c from
// concurrency goroutines, and returns how many succeeded and their
// latencies, sorted.
func runWorkload(ctx context.Context, c *http.Client, url string, body []byte, n, concurrency int) (int, []time.Duration, error) {
	latencies := make([]time.Duration, n)
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				start := time.Now()
				if send(ctx, c, url, body) {
					ok.Add(1)
				}
				latencies[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	slices.Sort(latencies)
	return int(ok.Load()), latencies, nil
}

// cost prices the tokens the server billed, every attempt that reached its
// model whether or not its answer made it back (the Billable counters),
// with the library's own cost function, the one the Budget charges with.
func cost(st httpguardtest.Stats, p httpguard.Price) httpguard.Money {
	return p.Cost(httpguard.Usage{InputTokens: st.BillablePromptTokens, CachedInputTokens: st.BillableCachedTokens,
		OutputTokens: st.BillableCompletionTokens})
}

// send sends one logical request and reports whether it succeeded.
func send(ctx context.Context, c *http.Client, url string, body []byte) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer demo-key")
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}
