// Command proxy benchmarks httpguard proxy against Portkey's AI gateway:
// both run as their own processes, side by side, in front of one loopback
// upstream (httpguardtest's server, answering at once), and the same load
// goes through each, and straight to the upstream for the baseline.
//
// It prints, for JSON and streaming answers:
//   - the latency each gateway adds at a fixed rate (-rate requests/s to
//     each target for -duration, open loop), at p50 and p99: the gateway's
//     percentile minus the direct one;
//   - the highest rate each sustains: requests completed per second by
//     -concurrency closed-loop clients, and the errors.
//
// The targets are measured interleaved (the fixed-rate requests take turns;
// the throughput runs alternate in -rounds slices), so that whatever else
// runs on the machine weighs on each alike.
//
// Run it with bench/proxy/run.sh, which builds httpguard and installs
// Portkey (npm @portkey-ai/gateway 1.15.2). It is not a CI step.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
)

var (
	httpguardBin = flag.String("httpguard", "", "the httpguard binary")
	portkeyDir   = flag.String("portkey", "", "the @portkey-ai/gateway package directory")
	rate         = flag.Int("rate", 50, "requests per second to each target in the fixed-rate run")
	rounds       = flag.Int("rounds", 5, "slices the throughput runs alternate in")
	duration     = flag.Duration("duration", 10*time.Second, "length of each run")
	concurrency  = flag.Int("concurrency", 32, "clients of the throughput run")
	warmup       = flag.Int("warmup", 200, "requests sent through each target before measuring")
)

const (
	jsonBody   = `{"model":"deepseek-v3.2","max_tokens":16,"messages":[{"role":"user","content":"Say ok. Say ok. Say ok. Say ok."}]}`
	streamBody = `{"model":"deepseek-v3.2","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say ok. Say ok. Say ok. Say ok."}]}`
	prices     = `{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`
)

// target is where the load goes.
type target struct {
	name   string
	url    string // the chat completions URL
	header http.Header
}

func main() {
	flag.Parse()
	if *httpguardBin == "" || *portkeyDir == "" {
		log.Fatal("usage: proxy -httpguard BIN -portkey DIR (see run.sh)")
	}
	up, err := httpguardtest.NewServer(httpguardtest.Config{History: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer up.Close()

	dir, err := os.MkdirTemp("", "httpguard-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pricesFile := filepath.Join(dir, "prices.json")
	if err := os.WriteFile(pricesFile, []byte(prices), 0o600); err != nil {
		log.Fatal(err)
	}

	hgPort, pkPort := freePort(), freePort()
	hg := start(*httpguardBin, []string{"proxy", "--listen", "127.0.0.1:" + hgPort, "--upstream", up.BaseURL(),
		"--prices", pricesFile, "--budget", "1000000", "--max-retries", "3", "--base-delay", "100ms", "--max-delay", "1s"})
	defer stop(hg)
	// Portkey at its best: headless (no log console) and in production mode.
	pk := start("node", []string{filepath.Join(*portkeyDir, "build", "start-server.js"), "--port=" + pkPort, "--headless"},
		"NODE_ENV=production")
	defer stop(pk)

	targets := []target{
		{name: "direct (no gateway)", url: up.BaseURL() + "/chat/completions", header: http.Header{"Authorization": {"Bearer sk-test"}}},
		{name: "httpguard proxy (Retrier + Budget)", url: "http://127.0.0.1:" + hgPort + "/v1/chat/completions",
			header: http.Header{"Authorization": {"Bearer sk-test"}}},
		{name: "Portkey gateway 1.15.2 (retry config)", url: "http://127.0.0.1:" + pkPort + "/v1/chat/completions",
			header: http.Header{"Authorization": {"Bearer sk-test"}, "X-Portkey-Provider": {"openai"},
				"X-Portkey-Custom-Host": {up.BaseURL()},
				"X-Portkey-Config":      {`{"retry":{"attempts":3,"on_status_codes":[429,500,502,503,504]}}`}}},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}, Timeout: 30 * time.Second}
	for _, t := range targets {
		waitReady(client, t)
	}
	fmt.Printf("bench/proxy: %d cores (GOMAXPROCS %d), fixed rate %d req/s for %v, throughput with %d clients for %v;\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), *rate, *duration, *concurrency, *duration)
	fmt.Printf("upstream: httpguardtest on 127.0.0.1 answering at once (16 completion tokens; streams of 19 events).\n\n")

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ANSWER\tTARGET\tP50\tP99\tADDED P50\tADDED P99\tERRORS\tMAX RATE (req/s)\tERRORS AT MAX")
	for _, mode := range []struct{ name, body string }{{"JSON", jsonBody}, {"stream", streamBody}} {
		for _, t := range targets {
			for range *warmup {
				send(client, t, mode.body)
			}
		}
		fixed := fixedRate(client, targets, mode.body)
		thr := throughput(client, targets, mode.body)
		base := fixed[0]
		for i, t := range targets {
			added50, added99 := "-", "-"
			if i > 0 {
				added50 = round(fixed[i].p(50) - base.p(50)).String()
				added99 = round(fixed[i].p(99) - base.p(99)).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%s\t%d\t%.0f\t%d\n", mode.name, t.name, round(fixed[i].p(50)), round(fixed[i].p(99)),
				added50, added99, fixed[i].errors, thr[i].rate, thr[i].errors)
		}
		fmt.Fprintf(os.Stderr, "%s: done\n", mode.name)
	}
	tw.Flush()
}

type result struct {
	lat    []time.Duration
	errors int64
	rate   float64
}

func (r *result) p(q int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[min(len(r.lat)-1, len(r.lat)*q/100)]
}

// fixedRate sends -rate requests a second to each target for -duration,
// the targets taking turns, each request on its own goroutine (open loop:
// a slow target does not slow the sender).
func fixedRate(client *http.Client, targets []target, body string) []result {
	per := int(float64(*rate) * duration.Seconds())
	n := per * len(targets)
	interval := time.Second / time.Duration(*rate*len(targets))
	lat := make([]time.Duration, n)
	errs := make([]atomic.Int64, len(targets))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := send(client, targets[i%len(targets)], body)
			if err != nil {
				errs[i%len(targets)].Add(1)
			}
			lat[i] = d
		}()
	}
	wg.Wait()
	out := make([]result, len(targets))
	for i := range n {
		out[i%len(targets)].lat = append(out[i%len(targets)].lat, lat[i])
	}
	for i := range out {
		out[i].errors = errs[i].Load()
	}
	return out
}

// throughput runs -concurrency clients in a loop against each target in
// turn, -rounds slices of -duration/-rounds each, and returns the rate of
// requests each completed without error.
func throughput(client *http.Client, targets []target, body string) []result {
	out := make([]result, len(targets))
	elapsed := make([]time.Duration, len(targets))
	ok := make([]int64, len(targets))
	for range *rounds {
		for i, t := range targets {
			n, errs, d := closedLoop(client, t, body, *duration/time.Duration(*rounds))
			ok[i] += n
			out[i].errors += errs
			elapsed[i] += d
		}
	}
	for i := range out {
		out[i].rate = float64(ok[i]) / elapsed[i].Seconds()
	}
	return out
}

func closedLoop(client *http.Client, t target, body string, d time.Duration) (ok, errs int64, elapsed time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var nok, nerr atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := send(client, t, body); err != nil {
					nerr.Add(1)
				} else {
					nok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return nok.Load(), nerr.Load(), time.Since(start)
}

// send posts body to t and reads the whole answer; an error status is an
// error.
func send(client *http.Client, t target, body string) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, err
	}
	req.Header = t.header.Clone()
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return time.Since(start), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return d, err
}

func waitReady(client *http.Client, t target) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := send(client, t, jsonBody)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fatalf("%s is not answering: %v", t.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children are the gateways started, stopped by fatalf too.
var children []*exec.Cmd

func start(bin string, args []string, env ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		fatalf("%s: %v", bin, err)
	}
	children = append(children, cmd)
	return cmd
}

func fatalf(format string, args ...any) {
	for _, c := range children {
		stop(c)
	}
	log.Fatalf(format, args...)
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func round(d time.Duration) time.Duration {
	if d < 0 {
		return -round(-d)
	}
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
