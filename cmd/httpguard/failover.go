package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
)

// This file is the demo's "primary down" section: the primary server
// answers 503 for the whole run, a second one is healthy, and a plain
// client, the Retrier alone, and a Fallback to the second server above the
// Retrier and a Breaker send the same workload.

// fallbackModel is what the second server is asked for instead of the
// workload's deepseek-v3.2.
const fallbackModel = "gpt-4.1-mini"

// failoverContender builds a client for one run against the two servers,
// given their base URLs.
type failoverContender struct {
	name  string
	build func(base http.RoundTripper, primary, second string) (*http.Client, error)
}

// oneServer adapts a contender of the other scenarios, which knows one
// server only.
func oneServer(c contender) failoverContender {
	return failoverContender{c.name, func(base http.RoundTripper, _, _ string) (*http.Client, error) {
		cl, err := c.newClient(base)
		return cl.Client, err
	}}
}

// failingOver is the guarded stack with a Breaker, under a Fallback to the
// second server: Fallback → Retrier → Breaker.
var failingOver = failoverContender{"httpguard Fallback + Retrier + Breaker", func(base http.RoundTripper, primary, second string) (*http.Client, error) {
	f, err := httpguard.NewFallback(httpguard.FallbackConfig{Targets: []httpguard.Target{
		{Name: "primary", BaseURL: primary},
		{Name: "second", BaseURL: second, Header: http.Header{"Authorization": {"Bearer second-key"}},
			Models: map[string]string{"deepseek-v3.2": fallbackModel}},
	}})
	if err != nil {
		return nil, err
	}
	r, err := httpguard.NewRetrier(guardedPolicy())
	if err != nil {
		return nil, err
	}
	b, err := httpguard.NewBreaker(httpguard.BreakerConfig{CoolDown: httpguard.DefaultCoolDown / timeScale})
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: httpguard.Chain(base, f, r, b)}, nil
}}

// failoverRow is one line of the section's table.
type failoverRow struct {
	client       string
	requests, ok int
	p50, p99     time.Duration
	primaryHits  int64 // requests the dead primary received
	secondHits   int64
}

// runFailover runs the section with n logical requests per client.
func runFailover(ctx context.Context, n int) ([]failoverRow, error) {
	var rows []failoverRow
	for _, c := range []failoverContender{oneServer(plain), oneServer(guarded), failingOver} {
		row, err := measureFailover(ctx, c, n)
		if err != nil {
			return rows, fmt.Errorf("primary down, %s: %w", c.name, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// measureFailover runs n logical requests of c against fresh servers.
func measureFailover(ctx context.Context, c failoverContender, n int) (failoverRow, error) {
	server := httpguardtest.Config{Latency: time.Millisecond}
	primary, err := httpguardtest.NewServer(server)
	if err != nil {
		return failoverRow{}, err
	}
	defer primary.Close()
	if err := primary.StartOutage(httpguardtest.ServiceUnavailable()); err != nil {
		return failoverRow{}, err
	}
	second, err := httpguardtest.NewServer(server)
	if err != nil {
		return failoverRow{}, err
	}
	defer second.Close()
	for _, srv := range []*httpguardtest.Server{primary, second} {
		if err := reach(ctx, srv); err != nil {
			return failoverRow{}, err
		}
	}
	base := demoTransport(concurrency)
	defer base.CloseIdleConnections()
	client, err := c.build(base, primary.BaseURL(), second.BaseURL())
	if err != nil {
		return failoverRow{}, err
	}

	ok, latencies, err := runWorkload(ctx, client, primary.BaseURL()+"/chat/completions", requestBody, n, concurrency)
	if err != nil {
		return failoverRow{}, err
	}
	return failoverRow{client: c.name, requests: n, ok: ok, p50: percentile(latencies, 50), p99: percentile(latencies, 99),
		primaryHits: primary.Stats().Requests, secondHits: second.Stats().Requests}, nil
}

// printFailover runs the section and prints it to w.
func printFailover(ctx context.Context, w io.Writer, n int) ([]failoverRow, error) {
	rows, err := runFailover(ctx, n)
	if err != nil {
		return rows, err
	}
	fmt.Fprintf(w, "\nprimary down: the primary server answers 503 to every request for the whole run; a second server is\n"+
		"healthy. The Fallback sends it what the primary gives up on, with its own key and %s in place of\n"+
		"deepseek-v3.2; the Breaker opens after %d failures and lets probes through every %v (30s scaled).\n\n",
		fallbackModel, httpguard.DefaultConsecutiveFailures, httpguard.DefaultCoolDown/timeScale)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tSUCCESS\tP50\tP99\tHITS ON THE DEAD PRIMARY\tHITS ON THE SECOND")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f%%\t%v\t%v\t%d\t%d\n", r.client, 100*float64(r.ok)/float64(max(r.requests, 1)),
			round(r.p50), round(r.p99), r.primaryHits, r.secondHits)
	}
	return rows, tw.Flush()
}
