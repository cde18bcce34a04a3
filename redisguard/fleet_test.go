package redisguard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run real processes: the test binary again, as children (see
// child_test.go), sharing one Redis server and one fault server that bills
// every attempt reaching it.

// child is a running child process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *syncBuffer
	once   sync.Once
	err    error // the exit status, once waited for
}

func startChild(t *testing.T, c childConfig) *child {
	t.Helper()
	cfg, err := json.Marshal(c)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	ch := &child{cmd: cmd, stderr: new(syncBuffer)}
	cmd.Stderr = ch.stderr
	ch.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	ch.lines = bufio.NewScanner(stdout)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		ch.wait()
	})
	return ch
}

// wait waits for the child to exit, once all its output was read.
func (c *child) wait() error {
	c.once.Do(func() { c.err = c.cmd.Wait() })
	return c.err
}

// line returns the child's next line of output.
func (c *child) line(t *testing.T) string {
	t.Helper()
	if !c.lines.Scan() {
		t.Fatalf("the child ended (%v) without a line: %v\n%s", c.wait(), c.lines.Err(), c.stderr)
	}
	return c.lines.Text()
}

// result waits for a load child to end and returns its report.
func (c *child) result(t *testing.T) childResult {
	t.Helper()
	var r childResult
	require.NoError(t, json.Unmarshal([]byte(c.line(t)), &r))
	require.NoError(t, c.wait(), "the child failed:\n%s", c.stderr)
	return r
}

// billed is what the fault server may bill: every attempt that reached it.
func billed(api *httpguardtest.Server) httpguard.Money {
	st := api.Stats()
	return testPrices["m"].Cost(httpguard.Usage{InputTokens: st.BillablePromptTokens,
		CachedInputTokens: st.BillableCachedTokens, OutputTokens: st.BillableCompletionTokens})
}

// reservationOf is what a Budget with testPrices reserves for body.
func reservationOf(t *testing.T, body string) httpguard.Money {
	t.Helper()
	var reserved httpguard.Money
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: httpguard.Dollar, Prices: testPrices,
		OnSettle: func(s httpguard.Settlement) { reserved = s.Reserved }})
	require.NoError(t, err)
	canned := httpguard.LayerFunc(func(http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}}, nil
		})
	})
	req, err := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	resp, err := httpguard.Chain(nil, b, canned).RoundTrip(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Positive(t, reserved)
	return reserved
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func newFaultServer(t *testing.T, c httpguardtest.Config) *httpguardtest.Server {
	t.Helper()
	api, err := httpguardtest.NewServer(c)
	require.NoError(t, err)
	t.Cleanup(api.Close)
	return api
}

// faultyAPI answers all of max_tokens, and fails one attempt in three:
// resets after reading the request and streams cut short (both billed),
// 503s (not billed), and headers too slow for the children's
// AttemptTimeout (billed: abandoned after the server read them).
func faultyAPI(t *testing.T, maxTokens int) *httpguardtest.Server {
	return newFaultServer(t, httpguardtest.Config{CompletionTokens: maxTokens, Latency: 2 * time.Millisecond, FaultRate: 0.3, Seed: 7,
		Faults: []httpguardtest.Fault{httpguardtest.ConnectionReset(), httpguardtest.CutStream(1),
			httpguardtest.ServiceUnavailable(), httpguardtest.SlowHeaders(time.Second)}})
}

func TestFleetOfProcessesNeverLetsTheBillPassTheCap(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	const processes, maxTokens = 4, 100
	api := faultyAPI(t, maxTokens)
	limit := 100 * reservationOf(t, chatBody(maxTokens))
	var children []*child
	for range processes {
		children = append(children, startChild(t, childConfig{Role: "load", Redis: srv.Addr, API: api.BaseURL(), Name: "fleet",
			Limit: limit, Requests: 150, Concurrency: 16, MaxTokens: maxTokens}))
	}
	var refused, ok, failed int
	for _, c := range children {
		// A child that started late may find the cap spent: no answer,
		// and no "answered" line before its report.
		line := c.line(t)
		var r childResult
		if line == "answered" {
			r = c.result(t)
		} else {
			require.NoError(t, json.Unmarshal([]byte(line), &r))
			require.NoError(t, c.wait(), "the child failed:\n%s", c.stderr)
		}
		assert.Zero(t, r.Unavailable, r.UnavailableSample)
		assert.Empty(t, r.CloseErr)
		refused += r.Refused
		ok += r.OK
		failed += r.Failed
	}
	bill := billed(api)
	store := newStore(t, srv.client(t), BudgetStoreConfig{Name: "fleet"})
	settled, held, err := store.Totals(context.Background(), "lifetime")
	require.NoError(t, err)
	t.Logf("%d processes: %d answered, %d refused, %d failed by faults, %d attempts reached the server; billable %v, settled %v, limit %v",
		processes, ok, refused, failed, api.Stats().Requests, bill, settled, limit)
	assert.LessOrEqual(t, bill, limit, "what the server may bill never passes the cap")
	assert.GreaterOrEqual(t, settled, bill, "every attempt the server may bill was charged")
	assert.LessOrEqual(t, settled, limit)
	assert.Zero(t, held, "every reservation ended")
	assert.Positive(t, refused, "the cap was reached")
	assert.Greater(t, bill, limit/2, "and mostly spent")
}

func TestFleetKeepsTheCapWhenRedisIsKilledAndRestarted(t *testing.T) {
	srv := startRedis(t, redisOptions{persist: true})
	api := newFaultServer(t, httpguardtest.Config{CompletionTokens: 20, Latency: 10 * time.Millisecond})
	const processes, maxTokens = 3, 100
	reservation := reservationOf(t, chatBody(maxTokens))
	limit := 40 * reservation // about 260 answers
	// Nothing here hangs (a killed Redis's connections close, its port
	// refuses), and every error but ErrUnavailable and ErrBudgetExceeded
	// fails the test: the attempts' timeout only bounds a store call that
	// would hang. At 250ms it also ended healthy attempts of processes the
	// machine did not run for as long (three in a row under load average
	// 30, Failed 1 to 6).
	var children []*child
	for range processes {
		children = append(children, startChild(t, childConfig{Role: "load", Redis: srv.Addr, API: api.BaseURL(), Name: "fleet",
			Limit: limit, Concurrency: 4, MaxTokens: maxTokens, Lease: time.Second, AttemptTimeout: 5 * time.Second}))
	}
	// Mid-run, once every process has had answers, Redis crashes, and
	// comes back 400ms later with what it had written. The processes stop
	// once the cap is reached. A reservation Redis wrote as it crashed but
	// never confirmed stays held until its lease ends.
	for _, c := range children {
		require.Equal(t, "answered", c.line(t))
	}
	srv.kill()
	time.Sleep(400 * time.Millisecond)
	srv.restart()
	store := newStore(t, srv.client(t), BudgetStoreConfig{Name: "fleet"})
	for deadline := time.Now().Add(time.Minute); ; {
		settled, held, err := store.Totals(context.Background(), "lifetime")
		require.NoError(t, err)
		if settled+held > limit-reservation {
			break
		}
		require.False(t, time.Now().After(deadline), "the cap was never reached: %v settled", settled)
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range children {
		fmt.Fprintln(c.stdin, "stop")
	}

	for _, c := range children {
		r := c.result(t)
		t.Logf("%+v", r)
		assert.Positive(t, r.Unavailable, "requests were refused while Redis was away")
		assert.Contains(t, r.UnavailableSample, `budget "fleet": Redis has not answered since`)
		assert.Positive(t, r.Recovered, "the process recovered by itself")
		assert.Zero(t, r.Failed, r.FailedSample)
		assert.Empty(t, r.CloseErr, "nothing kept unrecorded")
	}
	bill := billed(api)
	settled, _, err := store.Totals(context.Background(), "lifetime")
	require.NoError(t, err)
	t.Logf("billable %v, settled %v, limit %v", bill, settled, limit)
	assert.LessOrEqual(t, bill, limit, "no overspend")
	assert.GreaterOrEqual(t, settled, bill, "no charge was lost while Redis was away")
}

func TestFleetGetsTheMoneyOfAKilledProcessBackWhenItsLeaseEnds(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	stuck := newFaultServer(t, httpguardtest.Config{Latency: time.Hour}) // answers nothing until the client goes
	api := newFaultServer(t, httpguardtest.Config{})
	const lease, maxTokens = 500 * time.Millisecond, 10
	reservation := reservationOf(t, chatBody(maxTokens))
	limit := 3*reservation + reservation/2
	holder := startChild(t, childConfig{Role: "hold", Redis: srv.Addr, API: stuck.BaseURL(), Name: "fleet", Limit: limit,
		Lease: lease, Requests: 3, MaxTokens: maxTokens})

	client := srv.client(t)
	store := newStore(t, client, BudgetStoreConfig{Name: "fleet"})
	held := func() httpguard.Money {
		_, h, err := store.Totals(context.Background(), "lifetime")
		require.NoError(t, err)
		return h
	}
	for deadline := time.Now().Add(time.Minute); held() < 3*reservation; {
		require.False(t, time.Now().After(deadline), "the child never held its reservations:\n%s", holder.stderr)
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(3 * lease)
	require.Equal(t, 3*reservation, held(), "a live process renews its leases")

	require.NoError(t, holder.cmd.Process.Signal(syscall.SIGKILL))
	holder.wait()
	// By the Redis server's clock, the leases end at most a lease after
	// the kill, and until then the money stays held.
	ctx := context.Background()
	now, err := client.Time(ctx).Result()
	require.NoError(t, err)
	ends, err := client.ZRangeWithScores(ctx, store.keys.leases("lifetime"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, ends, 3)
	for _, e := range ends {
		assert.LessOrEqual(t, time.UnixMilli(int64(e.Score)).Sub(now), lease, "renewed no further than a lease ahead")
	}
	if time.Since(now) < lease/2 {
		assert.Equal(t, 3*reservation, held(), "a dead process's money is held until its lease ends")
	}

	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: testPrices, Store: store, MaxWait: time.Minute})
	require.NoError(t, err)
	hc := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}
	require.NoError(t, send(hc, api.BaseURL(), chatBody(maxTokens)), "the request waits for the dead process's money")
	t.Logf("the money came back %v after the kill (lease %v)", time.Since(now), lease)
	assert.Zero(t, held())
}

// A request waiting for room in one process wakes as soon as another
// process settles, not at its next poll of the store (every 200ms). On a
// loaded machine one wake may be late: the best of three trials counts.
func TestFleetWaiterWakesWhenAnotherProcessSettles(t *testing.T) {
	srv := startRedis(t, redisOptions{})
	api := newFaultServer(t, httpguardtest.Config{})
	const maxTokens = 10
	reservation := reservationOf(t, chatBody(maxTokens))
	limit := 2*reservation - 1 // the settler's hold leaves no room for one more
	settler := startChild(t, childConfig{Role: "settle", Redis: srv.Addr, Name: "fleet", Limit: limit, Amount: reservation})
	redisClient := srv.client(t)
	store := &waitingStore{BudgetStore: newStore(t, redisClient, BudgetStoreConfig{Name: "fleet"}), waiting: make(chan struct{}, 1)}
	b, err := httpguard.NewBudget(httpguard.BudgetConfig{Limit: limit, Prices: testPrices, Store: store, MaxWait: 10 * time.Second})
	require.NoError(t, err)
	client := &http.Client{Transport: httpguard.Chain(api.Client().Transport, b)}

	best := time.Hour
	for trial := 0; trial < 3 && best >= 100*time.Millisecond; trial++ {
		fmt.Fprintln(settler.stdin, "hold")
		require.Equal(t, "held", settler.line(t))
		store.reset()
		sent := api.Stats().Requests
		done := make(chan time.Time, 1)
		go func() {
			assert.NoError(t, send(client, api.BaseURL(), chatBody(maxTokens)))
			done <- time.Now()
		}()
		// Settle once the request watches, is subscribed and was refused
		// again: only a notice wakes it before its next poll, 200ms on.
		select {
		case <-store.waiting:
		case <-done:
			t.Fatal("the request did not wait for room")
		case <-time.After(10 * time.Second):
			t.Fatal("the request was not refused again after it began to watch")
		}
		waitSubscribed(t, redisClient, store.channel)
		require.Equal(t, sent, api.Stats().Requests, "the request waits")
		fmt.Fprintln(settler.stdin, "settle")
		f := strings.Fields(settler.line(t))
		require.Len(t, f, 2)
		ns, err := strconv.ParseInt(f[1], 10, 64)
		require.NoError(t, err)
		woke := (<-done).Sub(time.Unix(0, ns))
		t.Logf("woke %v after the other process settled", woke)
		best = min(best, woke)
	}
	assert.Less(t, best, 100*time.Millisecond, "woken by the settlement, not by its poll")
}

// waitingStore tells when a Budget's attempt waits for room: it watched
// for settlements and was then refused once more. A settlement before that
// refusal would let the attempt in at its try, not through a notice.
type waitingStore struct {
	*BudgetStore
	watching atomic.Bool
	waiting  chan struct{} // receives when a watching attempt is refused
}

func (s *waitingStore) Watch(ctx context.Context, window string) <-chan struct{} {
	ch := s.BudgetStore.Watch(ctx, window)
	s.watching.Store(true)
	return ch
}

func (s *waitingStore) Reserve(ctx context.Context, r httpguard.Reservation, limit httpguard.Money) (httpguard.ReserveResult, error) {
	res, err := s.BudgetStore.Reserve(ctx, r, limit)
	if err == nil && !res.OK && s.watching.Load() {
		select {
		case s.waiting <- struct{}{}:
		default:
		}
	}
	return res, err
}

// reset forgets earlier waits, while no attempt is in flight.
func (s *waitingStore) reset() {
	s.watching.Store(false)
	select {
	case <-s.waiting:
	default:
	}
}
